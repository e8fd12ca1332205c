// The live page (examples/live.html at GET / of the example server) in a real browser: Debian's
// Chromium, driven by playwright-core, against the example server started as a newcomer runs it
// (a child process) and fed by the real simulator CLI. Skipped with one line where no Chromium
// is installed; .ci/run installs it.
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'
import { changesOf, CHROMIUM, CHROMIUM_ARGS, screenshot, tableOf, waitForStatuses } from '../helpers/browser.js'
import { freePort, listening, simulate, startServer, stop } from '../helpers/example-process.js'

if (!existsSync(CHROMIUM)) {
  t.plan(0, `Chromium not installed at ${CHROMIUM}: skipping the browser test (apt-get install chromium)`)
} else {
  t.setTimeout(90_000)

  t.test('the live page shows the simulated jobs changing, catches up after a restart and starts over after a reset', async (t) => {
    // t.testdir() empties the directory each time it is called: called once.
    const dir = t.testdir()
    const database = join(dir, 'data', 'g2.db')
    const port = await freePort()
    const origin = `http://127.0.0.1:${port}`
    let server = startServer(t, { port, env: { G2SENTRY_DB: database } })
    await listening(server)

    const context: BrowserContext = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 720 }
    })
    t.teardown(() => context.close())
    const page = context.pages()[0] ?? await context.newPage()
    const pageErrors: string[] = []
    const consoleErrors: string[] = []
    const elsewhere: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()) })
    page.on('request', (request) => { if (!request.url().startsWith(origin)) elsewhere.push(request.url()) })

    const response = await page.goto(`${origin}/`)
    t.equal(response?.status(), 200, 'GET / serves the page')
    t.match(response?.headers()['content-type'], /^text\/html/)
    t.equal(await page.title(), 'G2 Sentry jobs, live')
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
    t.equal(await page.textContent('#connection'), 'Live', 'the indicator says the stream is live')
    t.ok(await page.isVisible('#empty'), 'with no job yet, the page says so')

    const simulated = (await simulate(port, [], { expectSuccess: true })).stdout
    t.match(simulated, /job 101 JobStarted .*→ 200 duplicate/, 'the simulator ran against the example server')
    await waitForStatuses(page, { 101: 'Completed', 102: 'InProgress', 103: 'Assigned' })

    const rows = await tableOf(page)
    t.same(rows.map((row) => row.jobId), [101, 102, 103], 'jobs 101, 102 and 103, in order; 104 (only an unsupported event) is not a job')
    t.match(rows, [
      { jobId: 101, status: 'Completed', badge: 'Completed', name: 'Open House at 123 Main St', event: 'JobCompleted', phone: '—' },
      { jobId: 102, status: 'InProgress', badge: 'InProgress', name: 'Charity Gala, Riverside Hall', event: 'JobStarted', phone: '+19876543210' },
      { jobId: 103, status: 'Assigned', badge: 'Assigned', name: 'Night watch, 9 Dock Rd', event: 'JobAssigned', phone: '—' }
    ], 'each row shows the job\'s status, and the phone fetched from GET /jobs/:id only while the job has one')
    t.notOk(await page.isVisible('#empty'), 'the empty note is gone')
    const seen = await changesOf(page)
    t.same(seen, [10, 9, 8, 6, 4, 2, 1], 'the list of changes has the seven applied changes, newest first (no duplicate, stale or unsupported)')
    t.match(await page.textContent('#summary'), /^3 jobs · last change #10$/)
    const first = await screenshot(dir, page, 'live-page.png')
    t.ok(existsSync(first), `screenshot: ${first}`)

    // The server stops: the page says it is reconnecting.
    const stopped = await stop(server, 5000)
    t.same(stopped, { code: 0, signal: null }, 'SIGTERM closes the server within 5 s, with the browser\'s stream open')
    await page.waitForSelector('#connection[data-state="reconnecting"]', { timeout: 10_000 })
    t.equal(await page.textContent('#connection'), 'Reconnecting…', 'the indicator says the page is reconnecting')
    await screenshot(dir, page, 'live-page-reconnecting.png')

    // Back on the same file; deliveries made at once, most likely before the browser's retry
    // (2 s): the page then gets them from the log, through Last-Event-ID.
    const consoleErrorsBefore = consoleErrors.length
    server = startServer(t, { port, env: { G2SENTRY_DB: database } })
    await listening(server)
    const restartedAt = Date.now()
    await simulate(port, ['--first-job', '201'], { expectSuccess: true })
    const simulatedIn = Date.now() - restartedAt
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 })
    t.comment(`the second simulation finished ${simulatedIn} ms after the restart; the page reconnected after ${Date.now() - restartedAt} ms or less`)
    await waitForStatuses(page, { 201: 'Completed', 202: 'InProgress', 203: 'Assigned' })
    const after = await tableOf(page)
    t.same(after.map((row) => row.jobId), [101, 102, 103, 201, 202, 203], 'the jobs of the second run joined the table')
    t.match(after.slice(3), [{ status: 'Completed' }, { status: 'InProgress', phone: '+19876543210' }, { status: 'Assigned' }])
    const changes = await changesOf(page)
    t.same(changes, [21, 20, 19, 17, 15, 13, 12, 10, 9, 8, 6, 4, 2, 1], 'every applied change once, in order, across the restart')
    t.match(await page.textContent('#summary'), /reconnected 1×/, 'the page counts the reconnect')
    await screenshot(dir, page, 'live-page-after-restart.png')

    // A page opened now lists the jobs from GET /jobs, as the first one built them from the stream.
    const fresh = await context.newPage()
    fresh.on('pageerror', (error) => pageErrors.push(error.message))
    await fresh.goto(`${origin}/`)
    await fresh.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
    await fresh.waitForSelector('#jobs tbody tr[data-job-id="203"]', { timeout: 10_000 })
    t.same(await tableOf(fresh), after, 'a newly opened page shows the same table, read from GET /jobs')
    t.same(await changesOf(fresh), [], 'and no change yet: it only lists what happens from now on')
    t.match(await fresh.textContent('#summary'), /^6 jobs$/)
    await fresh.close()

    // The server comes back on an empty database (a reset): the page's last id (21) is beyond the
    // end of the new log, the server says `reset`, and the page starts over instead of waiting
    // for seqs past 21 that would never come.
    t.same(await stop(server, 5000), { code: 0, signal: null })
    await page.waitForSelector('#connection[data-state="reconnecting"]', { timeout: 10_000 })
    server = startServer(t, { port, env: { G2SENTRY_DB: join(dir, 'data', 'reset.db') } })
    await listening(server)
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 })
    await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 0, undefined, { timeout: 10_000 })
    t.same(await changesOf(page), [], 'after the reset the page dropped the jobs and changes of the old log')
    await simulate(port, ['--first-job', '301'], { expectSuccess: true })
    await waitForStatuses(page, { 301: 'Completed', 302: 'InProgress', 303: 'Assigned' })
    t.same((await tableOf(page)).map((row) => row.jobId), [301, 302, 303], 'and shows the jobs of the new log')
    t.same(await changesOf(page), [10, 9, 8, 6, 4, 2, 1], 'with its changes, from seq 1 again')
    await screenshot(dir, page, 'live-page-after-reset.png')

    t.same(pageErrors, [], 'no script error on the page')
    t.same(consoleErrors.slice(0, consoleErrorsBefore), [], 'no console error while the server was up (not even a favicon 404)')
    t.same(elsewhere, [], 'the page loaded nothing from anywhere but the server')

    server.child.kill('SIGTERM')
    t.same(await server.exited, { code: 0, signal: null }, 'the restarted server stops cleanly with the page still connected')
  })
}
