// How every worker thread of this package starts (the audit's range checkers, the rebuild's share
// replayers): one bootstrap that loads the worker's module under whatever loader the parent runs.
import { Worker, type MessagePort, type ResourceLimits, type TransferListItem } from 'node:worker_threads'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

// Loads the worker's module. Built, it is a .js file that Node loads as it is. From source (the
// tests, tsx) it is a .ts file that needs the parent's TypeScript loader, and Node 20 does not run
// the parent's --import preloads in a worker thread (later versions do): when the module fails for
// its extension, this runs them here, as a later Node would, and loads the module again (under a
// new URL: the failed load stays cached under the first). tsx registers its hooks from the main
// thread only on Node 20 (privatenumber/tsx#354), so its own API registers them here. A module
// that still cannot be loaded is reported through `loadFailure` when the parent gave one.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads')
const { pathToFileURL } = require('node:url')
const { createRequire } = require('node:module')
const entry = workerData.entry
import(entry).catch(async (error) => {
  if (error?.code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw error
  const argv = process.execArgv
  for (let i = 0; i < argv.length; i++) {
    const option = /^--import(?:=(.*))?$/.exec(argv[i])
    if (option === null) continue
    const preload = option[1] ?? argv[++i]
    // As Node resolves it: a path from the working directory, a URL, or a package (--import tsx).
    const url = /^\\.{0,2}\\//.test(preload) ? pathToFileURL(preload).href
      : /^[a-z][a-z0-9+.-]*:/i.test(preload) ? preload
        : pathToFileURL(createRequire(pathToFileURL(process.cwd() + '/')).resolve(preload)).href
    await import(url)
    if (/\\/tsx\\/dist\\/loader\\.mjs$/.test(url)) (await import(new URL('./esm/api/index.mjs', url).href)).register()
  }
  return import(entry + '?preloaded')
}).catch((error) => {
  const failure = workerData.loadFailure
  if (failure === undefined) throw error
  failure.port.postMessage({ type: 'failed', message: 'cannot load ' + entry + ': ' + (error && error.message), loading: true })
  const signal = new Int32Array(failure.signal)
  Atomics.add(signal, failure.index, 1)
  Atomics.notify(signal, failure.index)
})`

export interface StartOptions {
  resourceLimits?: ResourceLimits
  /** Objects in `data` to move rather than copy (a MessagePort the worker answers on). */
  transferList?: TransferListItem[]
  /**
   * For a parent that waits with Atomics.wait, and so never sees a worker's 'error' event: a
   * module that cannot be loaded posts `{ type: 'failed', loading: true, message }` on `port`,
   * adds 1 to `signal[index]` (an Int32Array's buffer) and notifies it.
   */
  loadFailure?: { port: MessagePort, signal: SharedArrayBuffer, index: number }
}

/**
 * Starts a worker thread on the module `name` (without extension) next to the module at
 * `parentUrl` (its `import.meta.url`), with the same extension: the built .js file, or the .ts
 * source under a TypeScript loader. The module finds `data` in `workerData.data`.
 */
export function startWorker (parentUrl: string, name: string, data: unknown, options: StartOptions = {}): Worker {
  return new Worker(BOOTSTRAP, {
    eval: true,
    workerData: { entry: workerModule(parentUrl, name).href, data, loadFailure: options.loadFailure },
    resourceLimits: options.resourceLimits,
    transferList: options.transferList
  })
}

/** The URL of the worker module `name` next to the module at `parentUrl`, with its extension. */
export const workerModule = (parentUrl: string, name: string): URL =>
  new URL(`./${name}${extname(fileURLToPath(parentUrl))}`, parentUrl)
