/**
 * How a test starts a child process that runs TypeScript (the example server, a consumer).
 *
 * Under tap, the child loads tap's own TypeScript loader, the one the test process uses, so that
 * both compile a file of `src/` to the same JavaScript. tap records every child's coverage and
 * merges it by file; a file compiled twice, by two compilers (tsx in the child, tap's loader in
 * the test), has two different maps of the same name, and the merged counts are wrong: modules
 * that tests drive in-process came out at 20–50%. Outside tap (a test file run with tsx), tsx.
 */
export const TS_LOADER: readonly string[] = (() => {
  const tapLoader = process.execArgv.find((arg) => arg.includes('@tapjs/typescript'))
  return tapLoader === undefined ? ['--import', 'tsx'] : [tapLoader]
})()

/**
 * `env` for a child that runs TypeScript with tsx, as `npm start` and `npm run g2sentry` do: its
 * coverage is not recorded (tap's process tracking is left out of NODE_OPTIONS), so its tsx-built
 * maps never meet the test process's. The CLI under tsx, recorded, once brought the files it
 * loads down to nonsense counts (consumer.ts at 28% in one CI run, 93% in two others).
 */
export function withoutCoverage (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const options = (env.NODE_OPTIONS ?? '').split(' ').filter((option) => option !== '' && !option.includes('@tapjs/processinfo'))
  return { ...env, NODE_OPTIONS: options.join(' ') }
}

/** Exactly what `npm start` runs (tsx), for the test that walks the newcomer's path; not recorded. */
export function asNewcomer (env: NodeJS.ProcessEnv): { args: string[]; env: NodeJS.ProcessEnv } {
  return { args: ['--import', 'tsx'], env: withoutCoverage(env) }
}
