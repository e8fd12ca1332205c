// The package as npm would ship it: packed, unpacked into a fresh project, imported by name.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = resolve(import.meta.dirname, '..')

t.test('the packed package installs, registers and migrates by its own name', async (t) => {
  const dir = t.testdir({ 'package.json': JSON.stringify({ name: 'consumer', type: 'module' }) })
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: root })
  const [{ filename, files }] = JSON.parse(stdout) as [{ filename: string; files: Array<{ path: string }> }]
  const shipped = files.map((f) => f.path)
  t.ok(shipped.includes('migrations/sqlite/001_event_log.sql'), 'migrations ship')
  t.ok(shipped.includes('dist/index.js') && shipped.includes('dist/index.d.ts'), 'built code and types ship')
  t.notOk(shipped.some((p) => p.startsWith('src/') || p.startsWith('test/')), 'sources and tests stay out')

  const modules = join(dir, 'node_modules')
  const installed = join(modules, 'fastify-g2sentry')
  mkdirSync(installed, { recursive: true })
  await run('tar', ['-xzf', join(dir, filename), '-C', installed, '--strip-components=1'])
  // The consumer's other dependencies: link what this repo has installed.
  for (const name of readdirSync(join(root, 'node_modules'))) {
    if (name !== 'fastify-g2sentry' && !name.startsWith('.')) symlinkSync(join(root, 'node_modules', name), join(modules, name))
  }

  writeFileSync(join(dir, 'app.mjs'), `
    import Fastify from 'fastify'
    import g2sentry, { signBody } from 'fastify-g2sentry'
    const app = Fastify()
    await app.register(g2sentry, { secret: 'k', database: 'consumer.db' })
    const body = JSON.stringify({ jobId: 5, eventType: 'JobAssigned', jobName: 'Open House', jobStatus: 'Assigned' })
    const res = await app.inject({ method: 'POST', url: '/callbacks/g2sentry', body,
      headers: { 'content-type': 'application/json', 'x-signature': signBody(body, 'k') } })
    const job = await app.inject('/jobs/5')
    console.log(JSON.stringify({ callback: res.json(), job: job.json() }))
    await app.close()
  `)
  const consumer = await run(process.execPath, ['app.mjs'], { cwd: dir })
  const { callback, job } = JSON.parse(consumer.stdout)
  t.match(callback, { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })
  t.match(job, { jobId: 5, status: 'Assigned', version: 1 })

  const cli = await run(process.execPath, [join(installed, 'bin/g2sentry.js'), 'verify', '--db', 'consumer.db'], { cwd: dir })
  t.match(cli.stdout, /^ok: the log is intact/m)
})
