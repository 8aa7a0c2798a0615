/**
 * The one storage interface. Two adapters implement it: `pg` against a PostgreSQL server and
 * PGlite in a data directory. Same SQL, same migrations, same tests.
 */

export type Row = Record<string, unknown>

export type QueryResult<R extends Row = Row> = {
  rows: R[]
  /** Rows inserted, updated or deleted (or returned, for SELECT). */
  rowCount: number
}

/** Something SQL can be sent to: the database, a transaction, or a pinned lock session. */
export interface Queryable {
  query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>
  /** Several statements, no parameters (migrations). */
  exec(sql: string): Promise<void>
}

/** An advisory lock held on one pinned session until released. */
export interface AdvisoryLock {
  readonly key: bigint
  /** The session holding the lock; use it for work that must happen under the lock. */
  readonly session: Queryable
  /**
   * A transaction on the lock's own session: if the session (and so the lock) is lost, the work
   * done under it is lost with it instead of committing after another holder took over.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>
  release(): Promise<void>
}

export interface Db extends Queryable {
  readonly kind: 'pg' | 'pglite'
  /**
   * Runs fn in one transaction: committed when fn resolves, rolled back when it throws.
   * `tx` is the only handle usable inside fn: using the outer Db from within fn throws
   * (on PGlite it would deadlock, on pg it would silently run outside the transaction).
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>
  /**
   * Takes the session-level advisory lock `key` on a pinned session, or returns null when another
   * session holds it. Exactly one holder across all processes sharing the database (and, on PGlite,
   * across this process: its single session makes Postgres' own lock re-entrant).
   */
  tryAdvisoryLock(key: bigint | number): Promise<AdvisoryLock | null>
  /** Like tryAdvisoryLock but waits for the lock. */
  advisoryLock(key: bigint | number): Promise<AdvisoryLock>
  /**
   * LISTENs on `channel` (lower-case letters, digits, `_`): `onPayload` gets the payload of every
   * notification on it, from every process sharing the database, once its sender's transaction has
   * committed (send with `SELECT pg_notify($1, $2)` inside the writer's transaction). Resolves once
   * the LISTEN is in force; the returned function stops listening. On pg all LISTENs of a Db share
   * one dedicated connection, re-established with backoff when lost: `onReconnect` then says that
   * notifications sent meanwhile were missed. Callbacks run outside any transaction's context.
   */
  listen(channel: string, onPayload: (payload: string) => void, opts?: {onReconnect?: () => void}): Promise<() => Promise<void>>
  close(): Promise<void>
}

/** Advisory lock keys, one place for all of them (64-bit, signed). */
export const LOCKS = {
  migrate: 0x6a696c00_00000001n,
  auditSequencer: 0x6a696c00_00000002n,
  crl: 0x6a696c00_00000003n,
  /** The heartbeat history's retention loop (one replica prunes). */
  heartbeatRetention: 0x6a696c00_00000004n,
  /** The rollout driver (one replica advances rollouts). */
  rollouts: 0x6a696c00_00000005n,
  /** The alert evaluator (one replica evaluates the fleet's rules). */
  alerts: 0x6a696c00_00000006n,
  /** A node's sync relay (one process publishes the node database's outbox, in order). */
  syncRelay: 0x6a696c00_00000010n,
  /** The postgres-log transport's schema setup (concurrent first starts would race on CREATE … IF NOT EXISTS). */
  syncLogSchema: 0x6a696c00_00000011n,
} as const
