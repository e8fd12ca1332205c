// What erasure leaves where a guardian's phone was (docs/design.md, "Personal data, erasure and
// archiving"): a placeholder numbered per job, `[redacted 1]`, `[redacted 2]`…, one number per
// distinct phone in the order the job's rows had them. The projection compares phones only for
// equality and presence, so a replay over placeholders decides every row as it was decided live;
// the numbers say nothing of the phones themselves.

const PLACEHOLDER = /^\[redacted (\d+)\]$/

/** The placeholder of a job's `n`th distinct phone. */
export const redactedPhone = (n: number): string => `[redacted ${n}]`

/** The number of a placeholder, or undefined for anything else (a phone, null). */
export function placeholderNumber (phone: string | null | undefined): number | undefined {
  const match = phone == null ? null : PLACEHOLDER.exec(phone)
  return match === null ? undefined : Number(match[1])
}

/** A phone as a reader may see it: null where erasure left a placeholder. */
export const visiblePhone = (phone: string | null): string | null => placeholderNumber(phone) === undefined ? phone : null
