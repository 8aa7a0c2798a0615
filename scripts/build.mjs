// Build: bundle the CLI with esbuild (one file per command plus shared chunks, heavy dependencies
// left external and imported lazily), then generate the oclif manifest so help and --version never
// import a command module. Type checking is `npm run typecheck` (tsc), run by the test script.
import {readdirSync, rmSync} from 'node:fs'
import {join, relative} from 'node:path'
import {execFileSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

import * as esbuild from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const src = join(root, 'src')

function walk(dir) {
  return readdirSync(dir, {withFileTypes: true}).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  )
}

rmSync(join(root, 'dist'), {recursive: true, force: true})
rmSync(join(root, 'oclif.manifest.json'), {force: true})

const commands = walk(join(src, 'commands'))
await esbuild.build({
  entryPoints: commands.map((f) => ({in: f, out: relative(src, f).replace(/\.ts$/, '')})),
  outdir: join(root, 'dist'),
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  loader: {'.sql': 'text'},
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  logLevel: 'warning',
})

execFileSync(process.execPath, [join(root, 'node_modules/oclif/bin/run.js'), 'manifest'], {cwd: root, stdio: ['ignore', 'ignore', 'inherit']})
console.error(`built ${commands.length} commands and oclif.manifest.json`)
