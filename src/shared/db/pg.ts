import type {Client, Notification, Pool, PoolClient} from 'pg'

import {JilError, messageOf, systemCode} from '../errors.js'
import {assertChannel, GuardedQueries, lockKey, scopedHandle, type TxGuard} from './guard.js'
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
  // LISTEN holds a connection for good: its own client, not a pool slot (keepAlive: a dead server is noticed).
  const listenClient = () => new pg.Client({connectionString: url, application_name: `${opts.applicationName ?? 'jil'}:listen`, connectionTimeoutMillis: 10_000, keepAlive: true})
  return new PgDb(pool, listenClient)
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
  private readonly listener: PgListener

  constructor(
    private readonly pool: Pool,
    listenClient: () => Client,
  ) {
    super()
    this.direct = clientQueryable(pool)
    this.listener = new PgListener(listenClient, this.guard)
  }

  async listen(channel: string, onPayload: (payload: string) => void, opts: {onReconnect?: () => void} = {}): Promise<() => Promise<void>> {
    assertChannel(channel)
    this.guard.assertOutside()
    return this.listener.listen(channel, {onPayload, ...(opts.onReconnect ? {onReconnect: opts.onReconnect} : {})})
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
    await this.listener.close()
    await this.pool.end()
  }
}

type Listener = {onPayload: (payload: string) => void; onReconnect?: () => void}

/** How long the listener waits before reconnecting: 250 ms, doubling, at most 30 s. */
const RELISTEN_MIN_MS = 250
const RELISTEN_MAX_MS = 30_000

/**
 * Every LISTEN of one Db on one dedicated connection. When that connection is lost, it reconnects
 * with backoff (one owned, unref'd timer) and LISTENs on every channel again, then tells the
 * listeners that what was sent meanwhile is lost (a notification is never replayed).
 */
class PgListener {
  private client: Client | undefined
  private connecting: Promise<Client> | undefined
  private readonly channels = new Map<string, Set<Listener>>()
  private retry: NodeJS.Timeout | undefined
  private failures = 0
  private closed = false

  constructor(
    private readonly newClient: () => Client,
    private readonly guard: TxGuard,
  ) {}

  async listen(channel: string, l: Listener): Promise<() => Promise<void>> {
    let set = this.channels.get(channel)
    if (!set) this.channels.set(channel, (set = new Set()))
    set.add(l)
    try {
      // LISTEN on a channel already listened to is a no-op: no bookkeeping of what the session has.
      await (await this.connected()).query(`LISTEN ${channel}`)
    } catch (err) {
      this.remove(channel, l)
      throw err
    }
    let done = false
    return async () => {
      if (done) return
      done = true
      if (this.remove(channel, l)) await this.client?.query(`UNLISTEN ${channel}`).catch(() => {}) // a lost session listens to nothing anyway
    }
  }

  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.retry)
    this.retry = undefined
    this.channels.clear()
    const c = this.client ?? (await this.connecting?.catch(() => undefined))
    this.client = undefined
    await c?.end().catch(() => {})
  }

  /** True when the channel has no listener left. */
  private remove(channel: string, l: Listener): boolean {
    const set = this.channels.get(channel)
    if (!set) return false
    set.delete(l)
    if (set.size > 0) return false
    this.channels.delete(channel)
    return true
  }

  private connected(): Promise<Client> {
    if (this.closed) return Promise.reject(new JilError('DB_CLOSED', 'the database handle is closed', {status: 503}))
    if (this.client) return Promise.resolve(this.client)
    this.connecting ??= this.open().finally(() => (this.connecting = undefined))
    return this.connecting
  }

  private async open(): Promise<Client> {
    const c = this.newClient()
    // Kept for the client's whole life: an 'error' without a listener would crash the process.
    c.on('error', () => this.lost(c))
    c.on('end', () => this.lost(c))
    c.on('notification', (m: Notification) => {
      const payload = m.payload
      if (payload === undefined) return
      for (const l of this.channels.get(m.channel) ?? []) this.guard.exit(() => l.onPayload(payload))
    })
    try {
      await c.connect()
      for (const channel of this.channels.keys()) await c.query(`LISTEN ${channel}`)
      if (this.closed) throw new JilError('DB_CLOSED', 'the database handle is closed', {status: 503})
    } catch (err) {
      await c.end().catch(() => {})
      throw err
    }
    this.client = c
    return c
  }

  private lost(c: Client): void {
    if (c !== this.client) return
    this.client = undefined
    c.removeAllListeners('notification')
    void c.end().catch(() => {})
    this.reconnectLater()
  }

  private reconnectLater(): void {
    if (this.retry || this.closed || this.channels.size === 0) return
    const delay = Math.min(RELISTEN_MAX_MS, RELISTEN_MIN_MS * 2 ** this.failures)
    this.retry = setTimeout(() => {
      this.retry = undefined
      if (this.closed || this.client || this.channels.size === 0) return
      this.connected().then(
        () => {
          this.failures = 0
          for (const set of this.channels.values()) for (const l of set) if (l.onReconnect) this.guard.exit(l.onReconnect)
        },
        () => {
          this.failures++
          this.reconnectLater()
        },
      )
    }, delay)
    this.retry.unref()
  }
}
