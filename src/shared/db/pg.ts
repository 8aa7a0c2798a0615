import type {Pool, PoolClient} from 'pg'

import {JilError, messageOf, systemCode} from '../errors.js'
import {GuardedQueries, lockKey, scopedHandle} from './guard.js'
import type {AdvisoryLock, Db, Queryable, QueryResult, Row} from './types.js'

/** The pg adapter: a pool against a PostgreSQL server. */
export async function openPg(url: string, opts: {max?: number; applicationName?: string} = {}): Promise<Db> {
  const pg = (await import('pg')).default
  const types = {
    getTypeParser(oid: number, format?: 'text' | 'binary') {
      // int8 (counters, sequence numbers) as JS numbers, like the PGlite adapter.
      if (oid === 20) return (v: string) => Number(v)
      return pg.types.getTypeParser(oid, format as 'text')
    },
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'jil',
    connectionTimeoutMillis: 10_000,
    types,
  })
  // An idle client losing its server must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  try {
    const c = await pool.connect()
    c.release()
  } catch (err) {
    await pool.end().catch(() => {})
    throw dbConnectError(url, err)
  }
  return new PgDb(pool)
}

export function dbConnectError(url: string, err: unknown): JilError {
  const code = systemCode(err)
  const where = redactUrl(url)
  return new JilError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: ${code ?? messageOf(err)}`, {
    hint: 'check that the server runs and the --database-url (JIL_DATABASE_URL) is right',
    status: 503,
    cause: err,
  })
}

/** The URL with its password removed, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '(unparseable database URL)'
  }
}

function clientQueryable(client: PoolClient | Pool): Queryable {
  return {
    async query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
      const res = await client.query(sql, params as unknown[] | undefined)
      return {rows: res.rows as R[], rowCount: res.rowCount ?? res.rows.length}
    },
    async exec(sql: string): Promise<void> {
      await client.query(sql)
    },
  }
}

class PgDb extends GuardedQueries implements Db {
  readonly kind = 'pg' as const
  protected readonly direct: Queryable

  constructor(private readonly pool: Pool) {
    super()
    this.direct = clientQueryable(pool)
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    this.guard.assertOutside()
    const client = await this.pool.connect()
    const {handle, end} = scopedHandle(clientQueryable(client))
    let broken = false
    try {
      await client.query('BEGIN')
      const result = await this.guard.run(() => fn(handle))
      await client.query('COMMIT')
      return result
    } catch (err) {
      try {
        await client.query('ROLLBACK')
      } catch {
        broken = true
      }
      throw err
    } finally {
      end()
      client.release(broken)
    }
  }

  async tryAdvisoryLock(key: bigint | number): Promise<AdvisoryLock | null> {
    return this.lock(lockKey(key), false)
  }

  async advisoryLock(key: bigint | number): Promise<AdvisoryLock> {
    return (await this.lock(lockKey(key), true))!
  }

  private async lock(key: bigint, wait: boolean): Promise<AdvisoryLock | null> {
    this.guard.assertOutside()
    // Session-level locks belong to one connection: pin a client for the lock's lifetime.
    const client = await this.pool.connect()
    try {
      if (wait) {
        await client.query('SELECT pg_advisory_lock($1::bigint)', [key.toString()])
      } else {
        const res = await client.query<{ok: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key.toString()])
        if (!res.rows[0]?.ok) {
          client.release()
          return null
        }
      }
    } catch (err) {
      client.release(true)
      throw err
    }
    let released = false
    const session = clientQueryable(client)
    return {
      key,
      session,
      transaction: async <T>(fn: (tx: Queryable) => Promise<T>): Promise<T> => {
        const {handle, end} = scopedHandle(session)
        await client.query('BEGIN')
        try {
          const result = await this.guard.run(() => fn(handle))
          await client.query('COMMIT')
          return result
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {})
          throw err
        } finally {
          end()
        }
      },
      async release() {
        if (released) return
        released = true
        try {
          await client.query('SELECT pg_advisory_unlock($1::bigint)', [key.toString()])
          client.release()
        } catch {
          client.release(true)
        }
      },
    }
  }

  async close(): Promise<void> {
    await this.pool.end()
  }
}
