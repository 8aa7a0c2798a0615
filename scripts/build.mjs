// Build: bundle the CLI with esbuild, then generate the oclif manifest so help and --version never
// import a command module. Type checking is `npm run typecheck` (tsc), run by the test script.
//
// Entry points: one file per command (dist/commands/**, where the manifest points) plus dist/cli.js,
// which bin/run.js imports for oclif's `execute`. @oclif/core and its small dependencies are bundled
// (into a chunk shared by cli.js and every command, so there is one Command class and one oclif
// instance): node then loads a handful of files instead of ~165 at start, the way large oclif CLIs
// ship. Every other package stays external and is imported lazily by the commands that need it
// (fastify, pg, undici, x509, ...), so `jil --version` and `--help` never touch them.
import {readdirSync, rmSync} from 'node:fs'
import {isBuiltin} from 'node:module'
import {join, relative, sep} from 'node:path'
import {execFileSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

import * as esbuild from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const src = join(root, 'src')

function walk(dir) {
  return readdirSync(dir, {withFileTypes: true}).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  )
}

/** Packages bundled into dist/ (with everything they import); all others stay external. */
const BUNDLED = ['@oclif/core']
/** Optional development-time imports inside oclif (TypeScript source support, Yarn PnP): never bundled. */
const NEVER_BUNDLED = ['typescript', 'ts-node', 'tsx', 'pnpapi']
const CLI_ENTRY = 'jil:cli-entry'

/**
 * Resolution: bare imports from our sources are external unless listed in BUNDLED; imports made by
 * bundled packages (importer under node_modules) are bundled too. The CLI entry is virtual: it only
 * re-exports oclif's `execute`, so it needs no file in src/.
 */
const plugin = {
  name: 'jil-bundle',
  setup(build) {
    build.onResolve({filter: /^jil:cli-entry$/}, () => ({path: CLI_ENTRY, namespace: 'jil'}))
    build.onLoad({filter: /.*/, namespace: 'jil'}, () => ({
      contents: `export {execute} from '@oclif/core'\n`,
      resolveDir: src,
      loader: 'js',
    }))
    build.onResolve({filter: /^[^./]/}, (args) => {
      if (args.namespace === 'jil' && args.path === CLI_ENTRY) return undefined
      if (isBuiltin(args.path)) return undefined
      if (NEVER_BUNDLED.some((p) => args.path === p || args.path.startsWith(`${p}/`))) return {path: args.path, external: true}
      if (args.importer.includes(`${sep}node_modules${sep}`)) return undefined
      if (BUNDLED.some((p) => args.path === p || args.path.startsWith(`${p}/`))) return undefined
      return {path: args.path, external: true}
    })
  },
}

rmSync(join(root, 'dist'), {recursive: true, force: true})
rmSync(join(root, 'oclif.manifest.json'), {force: true})

const commands = walk(join(src, 'commands'))
await esbuild.build({
  entryPoints: [
    {in: CLI_ENTRY, out: 'cli'},
    // A command may be .tsx; the Ink views it imports (src/tui/*.tsx) are bundled through its imports,
    // compiled with tsconfig's "jsx": "react-jsx" (react/jsx-runtime stays external, like react and ink).
    ...commands.map((f) => ({in: f, out: relative(src, f).replace(/\.tsx?$/, '')})),
    // Worker threads are their own files; commands find them at dist/workers/NAME.js.
    ...walk(join(src, 'workers')).map((f) => ({in: f, out: relative(src, f).replace(/\.tsx?$/, '')})),
  ],
  outdir: join(root, 'dist'),
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Bundled CommonJS (oclif and its dependencies) calls require(): give each ES module output a real one.
  banner: {js: `import {createRequire as __jilCreateRequire} from 'node:module';\nconst require = __jilCreateRequire(import.meta.url);`},
  // Not minified: measured no faster to start (whitespace/syntax within noise, identifiers slower
  // with keepNames), and stack traces under --debug stay readable.
  plugins: [plugin],
  loader: {'.sql': 'text'},
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  logLevel: 'warning',
})

// OCLIF_SKIP_NEW_VERSION_CHECK: the oclif dev tool would otherwise ask the npm registry for a newer
// version of itself (in the background) on every build and print an update warning.
execFileSync(process.execPath, [join(root, 'node_modules/oclif/bin/run.js'), 'manifest'], {
  cwd: root,
  env: {...process.env, OCLIF_SKIP_NEW_VERSION_CHECK: 'true'},
  stdio: ['ignore', 'ignore', 'inherit'],
})
console.error(`built ${commands.length} commands and oclif.manifest.json`)
