import {randomBytes} from 'node:crypto'

import pg from 'pg'

/**
 * The real PostgreSQL server of the test services (scripts/test-services.sh). Under CI it must be
 * there; on a developer machine without it, the PostgreSQL half of a suite is skipped, loudly.
 */
export const PG_URL = process.env.JIL_TEST_DATABASE_URL
export const hasPg = Boolean(PG_URL)
if (!hasPg && process.env.CI) throw new Error('JIL_TEST_DATABASE_URL is not set: run `eval "$(scripts/test-services.sh env)"` first')

/** A new, empty database on the test server; drop() removes it. */
export async function freshPgDatabase(): Promise<{url: string; name: string; drop: () => Promise<void>}> {
  if (!PG_URL) throw new Error('no JIL_TEST_DATABASE_URL')
  const name = `jil_t_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({connectionString: PG_URL})
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const u = new URL(PG_URL)
  u.pathname = `/${name}`
  return {
    url: u.toString(),
    name,
    drop: async () => {
      const c = new pg.Client({connectionString: PG_URL})
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.end()
    },
  }
}
