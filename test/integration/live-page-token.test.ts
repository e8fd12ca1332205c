// The live page with the example server's read token: opened as /#token=<token>, it sends the
// token as a Bearer header to the job routes and as ?token= to the stream (EventSource cannot
// send headers). Skipped with one line where no Chromium is installed.
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'
import { CHROMIUM, CHROMIUM_ARGS, tableOf, waitForStatuses } from '../helpers/browser.js'
import { freePort, listening, simulate, startServer, stop } from '../helpers/example-process.js'

if (!existsSync(CHROMIUM)) {
  t.plan(0, `Chromium not installed at ${CHROMIUM}: skipping the browser test (apt-get install chromium)`)
} else {
  t.setTimeout(90_000)

  t.test('with G2SENTRY_READ_TOKEN the page opened as /#token=<token> sends it (header, and ?token= for the stream)', async (t) => {
    const dir = t.testdir()
    const TOKEN = 'page-r3ad-t0ken'
    const port = await freePort()
    const origin = `http://127.0.0.1:${port}`
    const server = startServer(t, { port, env: { G2SENTRY_DB: join(dir, 'g2.db'), G2SENTRY_READ_TOKEN: TOKEN } })
    await listening(server)
    const context: BrowserContext = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS
    })
    t.teardown(() => context.close())
    const page = context.pages()[0] ?? await context.newPage()
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))

    await page.goto(`${origin}/#token=${TOKEN}`)
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
    await simulate(port, [], { expectSuccess: true })
    await waitForStatuses(page, { 101: 'Completed', 102: 'InProgress', 103: 'Assigned' })
    t.match(await tableOf(page), [{ jobId: 101 }, { jobId: 102, phone: '+19876543210' }, { jobId: 103 }], 'the stream and the job routes answered the page')

    const without = await context.newPage()
    await without.goto(`${origin}/`)
    await without.waitForSelector('#connection[data-state="closed"]', { timeout: 10_000 })
    t.equal(await without.textContent('#connection'), 'Disconnected', 'without the token the stream refuses the page (401), which says so')
    t.same(pageErrors, [], 'no script error on the page')
    t.same(await stop(server), { code: 0, signal: null })
    t.notOk(server.output().includes(TOKEN), 'the token is nowhere in the server\'s log')
  })
}
