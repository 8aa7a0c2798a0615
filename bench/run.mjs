// `npm run bench -- NAME [ARGS...]` runs one benchmark: bench/NAME.mjs as is, or bench/NAME.ts
// bundled on the fly by esbuild (packages left external, .sql as text, like the build) into
// node_modules/.cache/jil-bench/NAME.mjs, so benches can import the project's TypeScript sources.
// Each bench prints one JSON line per figure on stdout: {"bench","metric","value","unit"};
// notes and progress go to stderr. Without NAME, lists the benches.
import {existsSync, mkdirSync, readdirSync} from 'node:fs'
import {join} from 'node:path'
import {spawnSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
const root = join(here, '..')
const [name, ...args] = process.argv.slice(2)

const benches = readdirSync(here)
  .filter((f) => /^[a-z0-9][\w-]*\.(mjs|ts)$/.test(f) && f !== 'run.mjs' && !f.endsWith('.d.ts'))
  .map((f) => f.replace(/\.(mjs|ts)$/, ''))
  .sort()

if (!name || name === '--help' || name === '-h') {
  process.stderr.write(`usage: npm run bench -- NAME [ARGS...]\nbenches: ${benches.join(', ')}\n`)
  process.exit(name ? 0 : 2)
}
if (!/^[a-z0-9][\w-]*$/.test(name) || !benches.includes(name)) {
  process.stderr.write(`no bench named ${JSON.stringify(name)}; benches: ${benches.join(', ')}\n`)
  process.exit(2)
}

let script = join(here, `${name}.mjs`)
if (!existsSync(script)) {
  const {build} = await import('esbuild')
  const outDir = join(root, 'node_modules/.cache/jil-bench')
  mkdirSync(outDir, {recursive: true})
  script = join(outDir, `${name}.mjs`)
  await build({
    entryPoints: [join(here, `${name}.ts`)],
    outfile: script,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    loader: {'.sql': 'text'},
    sourcemap: 'inline',
    logLevel: 'warning',
  })
}

const r = spawnSync(process.execPath, ['--enable-source-maps', script, ...args], {cwd: root, stdio: 'inherit'})
if (r.error) throw r.error
process.exit(r.status ?? 1)
