import { Worker, type ResourceLimits } from 'node:worker_threads'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

// Loads the worker's module. Built, it is a .js file that Node loads as it is. From source (the
// tests, tsx) it is a .ts file that needs the parent's TypeScript loader, and Node 20 does not run
// the parent's --import preloads in a worker thread (later versions do): when the module fails for
// its extension, this runs them here, as a later Node would, and loads the module again (under a
// new URL: the failed load stays cached under the first). tsx registers its hooks from the main
// thread only on Node 20, so its own API registers them here.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads')
const { pathToFileURL } = require('node:url')
const entry = workerData.entry
import(entry).catch(async (error) => {
  if (error?.code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw error
  const argv = process.execArgv
  for (let i = 0; i < argv.length; i++) {
    const option = /^--import(?:=(.*))?$/.exec(argv[i])
    if (option === null) continue
    const preload = option[1] ?? argv[++i]
    const url = /^\\.{0,2}\\//.test(preload) ? pathToFileURL(preload).href : preload
    await import(url)
    if (/\\/tsx\\/dist\\/loader\\.mjs$/.test(url)) (await import(new URL('./esm/api/index.mjs', url).href)).register()
  }
  return import(entry + '?preloaded')
})`

/**
 * Starts a worker thread on the module `name` (without extension) next to the module at
 * `parentUrl` (its `import.meta.url`), with the same extension: the built .js file, or the .ts
 * source under a TypeScript loader. The module finds `data` in `workerData.data`.
 */
export function startWorker (parentUrl: string, name: string, data: unknown, resourceLimits?: ResourceLimits): Worker {
  const entry = new URL(`./${name}${extname(fileURLToPath(parentUrl))}`, parentUrl).href
  return new Worker(BOOTSTRAP, { eval: true, workerData: { entry, data }, resourceLimits })
}
