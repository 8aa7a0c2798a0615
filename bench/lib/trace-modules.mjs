// Preload (`node --import ./bench/lib/trace-modules.mjs ...`) that records every module file the
// process loads into the file named by JIL_BENCH_TRACE, one URL or path a line: ES modules through
// a loader hook (which runs on its own thread), CommonJS modules from require.cache at exit.
import {appendFileSync} from 'node:fs'
import {createRequire, register} from 'node:module'

const file = process.env.JIL_BENCH_TRACE
if (file) {
  register('./trace-hooks.mjs', {parentURL: import.meta.url, data: {file}})
  const require = createRequire(import.meta.url)
  process.on('exit', () => {
    const cjs = Object.keys(require.cache)
    if (cjs.length > 0) appendFileSync(file, cjs.map((p) => `cjs ${p}\n`).join(''))
  })
}
