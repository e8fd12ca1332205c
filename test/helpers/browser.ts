/**
 * The live page in a real browser: Debian's Chromium through playwright-core, and what the tests
 * read from the page.
 */
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Page } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'
// Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

export interface Row { jobId: number; name: string; status: string | undefined; badge: string; phone: string; event: string }

/** What the page's job table shows. */
export function tableOf (page: Page): Promise<Row[]> {
  return page.$$eval('#jobs tbody tr', (rows) => rows.map((row) => {
    const cell = (name: string) => row.querySelector(`td.${name}`)?.textContent ?? ''
    const badge = row.querySelector('.badge') as HTMLElement | null
    return {
      jobId: Number((row as HTMLElement).dataset.jobId),
      name: cell('name'),
      status: badge?.dataset.status,
      badge: badge?.textContent ?? '',
      phone: cell('phone'),
      event: cell('event')
    }
  }))
}

/** The seqs in the page's list of changes, newest first. */
export function changesOf (page: Page): Promise<number[]> {
  return page.$$eval('#changes li .seq', (items) => items.map((item) => Number(item.textContent?.replace('#', ''))))
}

/** Waits until the rows of `expected` show those statuses and the phones have been fetched. */
export async function waitForStatuses (page: Page, expected: Record<number, string>, timeout = 15_000): Promise<void> {
  try {
    await page.waitForFunction((want) => Object.entries(want).every(([jobId, status]) => {
      const row = document.querySelector(`#jobs tbody tr[data-job-id="${jobId}"]`)
      const badge = row?.querySelector('.badge') as HTMLElement | null | undefined
      return badge?.dataset.status === status && row?.querySelector('td.phone')?.textContent !== '…'
    }), expected, { timeout })
  } catch (error) {
    const shown = JSON.stringify({ rows: await tableOf(page), changes: await changesOf(page), connection: await page.textContent('#connection') })
    throw new Error(`the page did not show ${JSON.stringify(expected)} within ${timeout} ms; it shows ${shown}`, { cause: error })
  }
}

/** Saves a screenshot in `dir`, and also in G2SENTRY_SCREENSHOTS when that is set. */
export async function screenshot (dir: string, page: Page, name: string): Promise<string> {
  const file = join(dir, name)
  await page.screenshot({ path: file, fullPage: true, animations: 'disabled' })
  const keep = process.env.G2SENTRY_SCREENSHOTS
  if (keep !== undefined && keep !== '') {
    mkdirSync(keep, { recursive: true })
    copyFileSync(file, join(keep, name))
  }
  return file
}
