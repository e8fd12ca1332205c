/**
 * The rows of a keyset-paged listing, fetched `limit` at a time: `fetch(after, limit)` returns the
 * rows after key `after` (undefined for the first page), in key order. No query stays open
 * between pages, so memory stays flat however long the listing is.
 */
export async function * paged<R, K> (
  fetch: (after: K | undefined, limit: number) => Promise<R[]>, keyOf: (row: R) => K, limit: number
): AsyncGenerator<R> {
  let after: K | undefined
  for (;;) {
    const page = await fetch(after, limit)
    yield * page
    if (page.length < limit) return
    after = keyOf(page[page.length - 1] as R)
  }
}
