// ESLint 9 with neostandard, the shared config of the Fastify plugins: standard's rules for
// JavaScript and TypeScript. `npm run lint` (also run by `npm test`).
import neostandard, { resolveIgnoresFromGitignore } from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: resolveIgnoresFromGitignore()
  }),
  {
    rules: {
      // `void promise;` marks a promise deliberately left to run (a feed, a cleanup); as a value, void stays an error.
      'no-void': ['error', { allowAsStatement: true }],
      // TypeScript itself refuses a real redeclaration; a TypeBox schema and its static type share a name on purpose.
      '@typescript-eslint/no-redeclare': 'off',
      // prom-client metrics register themselves in their registry when constructed.
      'no-new': 'off'
    }
  }
]
