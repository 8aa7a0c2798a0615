// Loader hooks for trace-modules.mjs: appends each loaded module URL to the trace file.
import {appendFileSync} from 'node:fs'

let file

export function initialize(data) {
  file = data.file
}

export async function load(url, context, nextLoad) {
  const r = await nextLoad(url, context)
  if (file && !url.startsWith('node:')) appendFileSync(file, `esm ${url}\n`)
  return r
}
