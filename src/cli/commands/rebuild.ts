import { defineCommand } from '../command.js'
import { withLog } from '../open-log.js'
import { describeRebuild } from '../render.js'

export const rebuild = defineCommand({
  summary: 'recompute the job projection from the log and store it',
  usage: 'Usage: g2sentry rebuild --db FILE|URL',
  help: 'Replays the whole log through the projection and replaces the jobs table with the result.',
  options: {
    db: { type: 'string' }
  },
  async run (values, { out }) {
    return withLog(values.db, 'write', async (store) => {
      const report = await store.rebuild()
      for (const line of describeRebuild(report, 'rebuilt')) await out(line)
      // The log is never rewritten: rows whose recorded outcome does not replay are evidence to keep.
      if (report.outcomeMismatches.length > 0) await out('FAILED: the projection was rebuilt, but log rows do not replay to their recorded outcome')
      return report.outcomeMismatches.length > 0 ? 1 : 0
    })
  }
})
