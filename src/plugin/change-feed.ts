import type { JobChange } from '../domain/job-change.js'

type Listener = (change: JobChange) => void

/**
 * The projection changes, for the live stream's subscribers. On its own it passes on what this
 * instance publishes after each commit; once it draws from the log (src/plugin/log-feed.ts) it
 * emits the log's changes of every instance, in seq order, and a publish only says that the log
 * grew.
 */
export class ChangeFeed {
  readonly #listeners = new Set<Listener>()
  #source: (() => void) | undefined

  get subscribers (): number {
    return this.#listeners.size
  }

  subscribe (listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** A change this instance committed. */
  publish (change: JobChange): void {
    if (this.#source !== undefined) this.#source()
    else this.emit(change)
  }

  /** Makes the log the only source: `publish` then calls `wake`, and the reader calls `emit`. */
  drawFrom (wake: () => void): void {
    this.#source = wake
  }

  /** Hands `change` to every subscriber. */
  emit (change: JobChange): void {
    for (const listener of this.#listeners) listener(change)
  }
}
