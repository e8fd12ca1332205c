/**
 * Polls `condition` every `every` ms until it holds; throws (failing the test that awaits it)
 * naming `what` after `ms`. For what a test cannot await directly: a consumer's checkpoint, a
 * receiver's count, a socket's buffer.
 */
export async function until (what: string, condition: () => boolean | Promise<boolean>, ms = 20_000, every = 10): Promise<void> {
  const deadline = Date.now() + ms
  while (!await condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, every))
  }
}
