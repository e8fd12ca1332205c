// The documentation's links and its error table: every relative link in README.md, CONTRIBUTING.md
// and docs/*.md points at a file of the repository, every #anchor at a heading of its target (as
// GitHub writes heading ids), and the README's Errors table names every code in src/errors.ts.
// Reads files only: no server, no database.
import t from 'tap'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { errors } from '../../src/errors.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const docs = ['README.md', 'CONTRIBUTING.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))]

/** `markdown`'s lines, with those inside fenced code blocks (fences included) as undefined. */
function outsideFences (markdown: string): Array<string | undefined> {
  let fence: string | undefined
  return markdown.split('\n').map((line) => {
    const opening = /^\s*(`{3,}|~{3,})/.exec(line)
    if (opening === null) return fence === undefined ? line : undefined
    const marker = opening[1] as string
    if (fence === undefined) fence = marker
    else if (marker.startsWith(fence)) fence = undefined
    return undefined
  })
}

/** The prose of `markdown`, line for line: code blocks emptied and inline code spans blanked. */
function prose (markdown: string): string[] {
  return outsideFences(markdown).map((line) => line === undefined ? '' : line.replace(/`[^`]*`/g, (code) => ' '.repeat(code.length)))
}

/** Heading ids as GitHub makes them: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors (markdown: string): Set<string> {
  const ids = new Set<string>()
  const seen = new Map<string, number>()
  for (const line of outsideFences(markdown)) {
    const heading = line === undefined ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (heading === null) continue
    const text = (heading[1] as string).replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*]/g, '')
    const base = text.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    ids.add(count === 0 ? base : `${base}-${count}`)
  }
  return ids
}

/** Every inline link target in `markdown`'s prose: `[text](target)` and `[text](target "title")`. */
function links (markdown: string): Array<{ line: number; target: string }> {
  const found: Array<{ line: number; target: string }> = []
  prose(markdown).forEach((text, index) => {
    for (const match of text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      found.push({ line: index + 1, target: match[1] as string })
    }
  })
  return found
}

const external = (target: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(target)

t.test('every relative link in the documentation resolves', async (t) => {
  let checked = 0
  for (const doc of docs) {
    const source = readFileSync(join(root, doc), 'utf8')
    for (const { line, target } of links(source)) {
      if (external(target)) continue
      checked++
      const [path = '', anchor] = target.split('#', 2)
      const file = path === '' ? join(root, doc) : resolve(root, dirname(doc), decodeURIComponent(path))
      const where = `${doc}:${line} → ${target}`
      if (!t.ok(existsSync(file), `${where}: the file exists`)) continue
      t.ok(relative(root, file).startsWith('..') === false, `${where}: inside the repository`)
      if (anchor === undefined || anchor === '') continue
      if (!file.endsWith('.md') || statSync(file).isDirectory()) {
        t.fail(`${where}: an anchor into a file that is not markdown`)
        continue
      }
      t.ok(anchors(readFileSync(file, 'utf8')).has(anchor), `${where}: the heading exists`)
    }
  }
  t.ok(checked > 20, `links were found and checked (${checked})`)
})

t.test('the README\'s Errors table names every code in src/errors.ts', async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  for (const FastifyErrorClass of Object.values(errors)) {
    const error = new FastifyErrorClass('x', 'y')
    t.match(readme, new RegExp(`\\| \`${error.code}\` \\| ${error.statusCode} \\|`), `${error.code} with its status ${error.statusCode}`)
  }
})

t.test('the GitHub heading ids are computed as GitHub does', async (t) => {
  const ids = anchors('# A `GET /jobs/:jobId` route\n## 5. What each input gets\n```\n# not a heading\n```\n## The example server\'s environment\n## Twice\n## Twice\n')
  t.same([...ids], ['a-get-jobsjobid-route', '5-what-each-input-gets', 'the-example-servers-environment', 'twice', 'twice-1'])
})
