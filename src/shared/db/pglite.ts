import type {PGlite} from '@electric-sql/pglite'

import {assertChannel, GuardedQueries, lockKey, scopedHandle} from './guard.js'
import type {AdvisoryLock, Db, Queryable, QueryResult, Row} from './types.js'

/** int8 as JS numbers, like the pg adapter. */
const parsers = {20: (v: string) => Number(v)}

/**
 * The PGlite adapter: embedded PostgreSQL in a data directory (or in memory when `dataDir` is
 * undefined). One process, one session: the caller makes sure only one process opens the directory.
 */
export async function openPglite(dataDir: string | undefined, opts: {loadDataDir?: Blob} = {}): Promise<Db> {
  const {PGlite} = await import('@electric-sql/pglite')
  const pg = await PGlite.create(dataDir, {parsers, ...(opts.loadDataDir ? {loadDataDir: opts.loadDataDir} : {})})
  return new PgliteDb(pg)
}

function liteQueryable(pg: Pick<PGlite, 'query' | 'exec'>): Queryable {
  return {
    async query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
      const res = await pg.query<R>(sql, params as unknown[] | undefined)
      // PGlite reports affectedRows 0 for a SELECT: count its rows then, as pg does.
      return {rows: res.rows, rowCount: res.affectedRows || res.rows.length}
    },
    async exec(sql: string): Promise<void> {
      await pg.exec(sql)
    },
  }
}

class PgliteDb extends GuardedQueries implements Db {
  readonly kind = 'pglite' as const
  protected readonly direct: Queryable
  /** PGlite has one session, where Postgres' advisory locks are re-entrant: hold them in-process. */
  private readonly held = new Map<bigint, Promise<void>>()

  constructor(private readonly pg: PGlite) {
    super()
    this.direct = liteQueryable(pg)
  }

  /** The underlying PGlite (for dumping a template data dir in tests). */
  get raw(): PGlite {
    return this.pg
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    this.guard.assertOutside()
    return this.pg.transaction(async (t) => {
      const {handle, end} = scopedHandle(liteQueryable(t))
      try {
        return await this.guard.run(() => fn(handle))
      } finally {
        end()
      }
    })
  }

  async tryAdvisoryLock(key: bigint | number): Promise<AdvisoryLock | null> {
    const k = lockKey(key)
    if (this.held.has(k)) return null
    return this.take(k)
  }

  async advisoryLock(key: bigint | number): Promise<AdvisoryLock> {
    const k = lockKey(key)
    while (this.held.has(k)) await this.held.get(k)
    return this.take(k)
  }

  private take(k: bigint): AdvisoryLock {
    let done!: () => void
    this.held.set(k, new Promise<void>((r) => (done = r)))
    let released = false
    return {
      key: k,
      session: this.direct,
      transaction: (fn) => this.transaction(fn),
      release: async () => {
        if (released) return
        released = true
        this.held.delete(k)
        done()
      },
    }
  }

  /** PGlite's own LISTEN on its one session: nothing to reconnect, so `onReconnect` never fires. */
  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    assertChannel(channel)
    this.guard.assertOutside()
    const unlisten = await this.pg.listen(channel, (payload) => this.guard.exit(() => onPayload(payload)))
    let done = false
    return async () => {
      if (done) return
      done = true
      if (!this.pg.closed) await unlisten()
    }
  }

  async close(): Promise<void> {
    if (!this.pg.closed) await this.pg.close()
  }
}

export type {PgliteDb}
