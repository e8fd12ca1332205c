// The package as npm would ship it: packed, unpacked into a fresh project, imported by name from
// ESM, CommonJS and TypeScript under every module resolution a user may have.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
// A compiler run per TypeScript setup, each several seconds.
t.setTimeout(600_000)
const root = resolve(import.meta.dirname, '../..')

/** The packed package, unpacked into `dir`/node_modules beside links to this repo's own dependencies. */
async function installPacked (dir: string): Promise<{ installed: string; shipped: string[] }> {
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: root })
  const [{ filename, files }] = JSON.parse(stdout) as [{ filename: string; files: Array<{ path: string }> }]
  const modules = join(dir, 'node_modules')
  const installed = join(modules, 'fastify-g2sentry')
  mkdirSync(installed, { recursive: true })
  await run('tar', ['-xzf', join(dir, filename), '-C', installed, '--strip-components=1'])
  // The app's other dependencies: this repo's, less the types only its own development needs.
  for (const name of readdirSync(join(root, 'node_modules'))) {
    if (name === 'fastify-g2sentry' || name.startsWith('.')) continue
    if (name !== '@types') {
      symlinkSync(join(root, 'node_modules', name), join(modules, name))
      continue
    }
    mkdirSync(join(modules, name))
    for (const types of readdirSync(join(root, 'node_modules', name))) {
      if (types !== 'better-sqlite3') symlinkSync(join(root, 'node_modules', name, types), join(modules, name, types))
    }
  }
  return { installed, shipped: files.map((f) => f.path) }
}

const APP = (importLine: string) => `
  ${importLine}
  const app = Fastify()
  await app.register(g2sentry, { secret: 'k', database: 'consumer.db' })
  const body = JSON.stringify({ jobId: 5, eventType: 'JobAssigned', jobName: 'Open House', jobStatus: 'Assigned' })
  const res = await app.inject({ method: 'POST', url: '/callbacks/g2sentry', body,
    headers: { 'content-type': 'application/json', 'x-signature': signBody(body, 'k') } })
  const job = await app.inject('/jobs/5')
  console.log(JSON.stringify({ callback: res.json(), job: job.json() }))
  await app.close()
`

t.test('the packed package', async (t) => {
  const dir = t.testdir({ 'package.json': JSON.stringify({ name: 'consumer', type: 'module' }) })
  const { installed, shipped } = await installPacked(dir)

  t.test('ships built code, types and migrations, not sources or tests', async (t) => {
    t.ok(shipped.includes('migrations/sqlite/001_event_log.sql'), 'migrations ship')
    t.ok(shipped.includes('dist/index.js') && shipped.includes('dist/index.d.ts'), 'built code and types ship')
    t.notOk(shipped.some((p) => p.startsWith('src/') || p.startsWith('test/')), 'sources and tests stay out')
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
    t.notOk(Object.keys(manifest.dependencies).some((name) => name.startsWith('@types/')), 'no type-only package among the run-time dependencies')
  })

  t.test('every source map resolves: its sources are inlined', async (t) => {
    const maps = shipped.filter((p) => p.endsWith('.map'))
    t.ok(maps.length > 0, `${maps.length} source maps ship`)
    const unresolved = maps.filter((p) => {
      const map = JSON.parse(readFileSync(join(installed, p), 'utf8')) as { sources: string[]; sourcesContent?: Array<string | null> }
      return map.sources.some((source, i) => typeof map.sourcesContent?.[i] !== 'string' && !existsSync(resolve(dirname(join(installed, p)), source)))
    })
    t.same(unresolved, [], 'no map points at a file that is not there')
  })

  t.test('registers and migrates from an ES module app, and the CLI verifies its log', async (t) => {
    writeFileSync(join(dir, 'app.mjs'), APP("import Fastify from 'fastify'\n  import g2sentry, { signBody } from 'fastify-g2sentry'"))
    const { callback, job } = JSON.parse((await run(process.execPath, ['app.mjs'], { cwd: dir })).stdout)
    t.match(callback, { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })
    t.match(job, { jobId: 5, status: 'Assigned', version: 1 })
    const cli = await run(process.execPath, [join(installed, 'bin/g2sentry.js'), 'verify', '--db', 'consumer.db'], { cwd: dir })
    t.match(cli.stdout, /^ok: the log is intact/m)
  })

  t.test('require() works from a CommonJS app (Node >= 20.19)', async (t) => {
    const cjs = join(dir, 'cjs')
    rmSync(cjs, { recursive: true, force: true })
    mkdirSync(cjs)
    writeFileSync(join(cjs, 'app.cjs'), `
      const Fastify = require('fastify')
      const { g2sentry, signBody, errors } = require('fastify-g2sentry')
      if (require('fastify-g2sentry').default !== g2sentry) throw new Error('default and named exports differ')
      ;(async () => { ${APP('').replace('consumer.db', 'cjs.db')} ; console.error(new errors.BAD_SIGNATURE().code) })()
    `)
    const { stdout, stderr } = await run(process.execPath, ['app.cjs'], { cwd: cjs })
    t.match(JSON.parse(stdout), { callback: { outcome: 'applied' }, job: { status: 'Assigned' } })
    t.match(stderr, /FST_G2SENTRY_BAD_SIGNATURE/)
  })

  // What each setup's compiler must accept, with skipLibCheck off so our declarations are checked
  // too; an error code that is `any` instead of its literal type fails the @ts-expect-error line.
  const USE = `
    const app = Fastify()
    app.register(g2sentry, { secret: 's', database: ':memory:' })
    const code: 'FST_G2SENTRY_BAD_SIGNATURE' = new errors.BAD_SIGNATURE().code
    // @ts-expect-error the code is a literal type, not any
    const wrong: 'SOMETHING_ELSE' = new errors.BAD_SIGNATURE().code
    const status: 401 = errors.BAD_SIGNATURE().statusCode
    export { code, wrong, status }
  `
  const setups: Array<[string, Record<string, unknown>, string, string]> = [
    ['ESM, moduleResolution node16', { module: 'node16', moduleResolution: 'node16' }, 'module', 'index.ts'],
    ['ESM, moduleResolution nodenext', { module: 'nodenext', moduleResolution: 'nodenext' }, 'module', 'index.ts'],
    ['a bundler (moduleResolution bundler)', { module: 'esnext', moduleResolution: 'bundler' }, 'module', 'index.ts'],
    ['module preserve', { module: 'preserve' }, 'module', 'index.ts'],
    ['a CommonJS build (module nodenext, package type commonjs)', { module: 'nodenext', moduleResolution: 'nodenext', outDir: 'out' }, 'commonjs', 'index.cts']
  ]
  for (const [name, options, type, file] of setups) {
    t.test(`TypeScript: ${name}, skipLibCheck false, strict`, async (t) => {
      const project = join(dir, `ts-${setups.findIndex((s) => s[0] === name)}`)
      rmSync(project, { recursive: true, force: true })
      mkdirSync(project)
      symlinkSync(join(dir, 'node_modules'), join(project, 'node_modules'))
      writeFileSync(join(project, 'package.json'), JSON.stringify({ type }))
      writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
        compilerOptions: {
          target: 'es2022',
          strict: true,
          skipLibCheck: false,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          types: ['node'],
          noEmit: !('outDir' in options),
          ...options
        },
        files: [file]
      }))
      writeFileSync(join(project, file), `import Fastify from 'fastify'\nimport g2sentry, { errors } from 'fastify-g2sentry'\n${USE}`)
      const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
      const result = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: project }).then(() => '', (error: { stdout: string }) => error.stdout)
      t.equal(result, '', 'compiles without an error')
      if ('outDir' in options && result === '') {
        const built = await run(process.execPath, ['-e', 'require(\'./out/index.cjs\'); console.log(\'loaded\')'], { cwd: project })
        t.match(built.stdout, /loaded/, 'and the CommonJS output loads the package with require()')
      }
    })
  }
})
