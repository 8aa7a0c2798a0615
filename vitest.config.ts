import {defineConfig} from 'vitest/config'

/** Migrations are imported as text, as esbuild's text loader does in the build. */
const sqlAsText = {
  name: 'sql-as-text',
  transform(code: string, id: string) {
    if (id.endsWith('.sql')) return {code: `export default ${JSON.stringify(code)}`, map: null}
    return undefined
  },
}

export default defineConfig({
  plugins: [sqlAsText],
  test: {
    // Two cores: PGlite instances weigh 0.5-0.8 GB and initdb is CPU-bound, so keep parallelism low.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    projects: [
      {extends: true, test: {name: 'unit', include: ['test/unit/**/*.test.{ts,tsx}']}},
      {extends: true, test: {name: 'integration', include: ['test/integration/**/*.test.ts']}},
      {extends: true, test: {name: 'system', include: ['test/system/**/*.test.ts'], maxWorkers: 1}},
    ],
  },
})
