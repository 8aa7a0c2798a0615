import type {Row} from '../shared/db/types.js'

/**
 * The outbox contract for the node's services, in TypeScript: the same as calling the SQL function
 * `jil_emit(table, key, version, op, row)` in the transaction that made the change. Services never
 * publish to the bus themselves; the relay does, from the committed outbox.
 */

export type KeyValue = string | number | boolean

export type RowChange =
  | {table: string; key: KeyValue | readonly KeyValue[]; version: number; op: 'upsert'; row: Record<string, unknown>}
  | {table: string; key: KeyValue | readonly KeyValue[]; version: number; op: 'delete'}

/** Anything that runs parameterised SQL in the caller's transaction: our Db's tx handle, a pg PoolClient. */
export type TxLike = {query(sql: string, params?: unknown[]): Promise<{rows: Row[]}>}

/** Records `change` in the outbox, in the caller's transaction `tx`; returns the outbox id. */
export async function emit(tx: TxLike, change: RowChange): Promise<number> {
  const key = Array.isArray(change.key) ? change.key : [change.key]
  const r = await tx.query('SELECT jil_emit($1, $2::jsonb, $3::bigint, $4, $5::jsonb) AS id', [
    change.table,
    JSON.stringify(key),
    change.version,
    change.op,
    change.op === 'upsert' ? JSON.stringify(change.row) : null,
  ])
  return Number(r.rows[0]!.id)
}
