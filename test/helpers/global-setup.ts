import {ensureTemplate} from './pglite-template.js'

/** Runs once before all tests: build the PGlite template so tests only copy it. */
export default async function setup(): Promise<void> {
  await ensureTemplate()
}
