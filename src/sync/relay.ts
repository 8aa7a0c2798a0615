import type {Clock} from '../shared/clock.js'
import {LOCKS, type Db} from '../shared/db/types.js'
import {encodeEnvelope, rowKey, stateSyncTopic, SYNC_SCHEMA_VERSION, uuidv7, type SyncEnvelope} from '../shared/sync-envelope.js'
import type {Transport} from './transport.js'

/**
 * The relay: publishes the node database's outbox to the bus, in order. A round stamps the next
 * unstamped rows with this source's sequence numbers and event ids (committed before anything is
 * sent, so a retry re-sends the very same events), publishes the stamped, unsent rows in sequence
 * order keyed by row (one row's changes stay in order on one partition), then marks them sent. When
 * the bus is down, produce fails, nothing is marked, the backlog grows, and the next round sends it.
 * One relay per node database at a time (an advisory lock); a second one stands by.
 */

export type RelayRound = {published: number; standby: boolean}

export type RelayOptions = {
  db: Db
  transport: Transport
  clock: Clock
  /** Rows per round (default 1000). */
  batch?: number
  /** Partitions of a topic the relay has to create for a table the node does not declare. */
  partitions: number
  /** Sent rows are kept this long, then pruned (default 1 h). */
  keepSentMs?: number
}

type OutboxRow = {
  id: number
  table_name: string
  key: (string | number | boolean)[]
  version: number
  op: 'upsert' | 'delete'
  row_data: Record<string, unknown> | null
  seq: number
  event_id: string
  ts: string
  source_id: string
}

export class Relay {
  private readonly ensured = new Set<string>()
  private lastPrune = 0

  constructor(private readonly o: RelayOptions) {}

  /** Topics already created (the declared tables' at start). */
  markEnsured(topics: readonly string[]): void {
    for (const t of topics) this.ensured.add(t)
  }

  /** Publishes everything unsent now, in rounds of `batch`. */
  async drain(): Promise<RelayRound> {
    const lock = await this.o.db.tryAdvisoryLock(LOCKS.syncRelay)
    if (!lock) return {published: 0, standby: true}
    try {
      let published = 0
      for (;;) {
        const n = await this.round()
        published += n
        if (n < (this.o.batch ?? 1000)) break
      }
      await this.prune()
      return {published, standby: false}
    } finally {
      await lock.release()
    }
  }

  /** Rows not yet on the bus. */
  async backlog(): Promise<number> {
    const {rows} = await this.o.db.query<{n: number}>('SELECT count(*)::bigint AS n FROM jil_outbox WHERE sent_at IS NULL')
    return rows[0]!.n
  }

  private async round(): Promise<number> {
    const batch = this.o.batch ?? 1000
    await this.o.db.transaction(async (tx) => {
      const todo = await tx.query<{id: number}>('SELECT id FROM jil_outbox WHERE seq IS NULL ORDER BY id LIMIT $1 FOR UPDATE', [batch])
      if (todo.rows.length === 0) return
      const {rows} = await tx.query<{last_seq: number}>('UPDATE jil_sync_node SET last_seq = last_seq + $1 RETURNING last_seq', [todo.rows.length])
      const first = rows[0]!.last_seq - todo.rows.length + 1
      const now = this.o.clock.now().getTime()
      await tx.query(
        `UPDATE jil_outbox o SET seq = x.seq, event_id = x.eid FROM unnest($1::bigint[], $2::bigint[], $3::uuid[]) AS x(id, seq, eid) WHERE o.id = x.id`,
        [todo.rows.map((r) => r.id), todo.rows.map((_, i) => first + i), todo.rows.map(() => uuidv7(now))],
      )
    })
    const {rows} = await this.o.db.query<OutboxRow>(
      `SELECT o.id, o.table_name, o.key, o.version, o.op, o.row_data, o.seq, o.event_id::text AS event_id,
              to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts, n.source_id
         FROM jil_outbox o CROSS JOIN jil_sync_node n
        WHERE o.sent_at IS NULL AND o.seq IS NOT NULL ORDER BY o.seq LIMIT $1`,
      [batch],
    )
    if (rows.length === 0) return 0
    const missing = [...new Set(rows.map((r) => stateSyncTopic(r.table_name)))].filter((t) => !this.ensured.has(t))
    if (missing.length) {
      await this.o.transport.ensureTopics(missing.map((name) => ({name, partitions: this.o.partitions})))
      this.markEnsured(missing)
    }
    await this.o.transport.produce(
      rows.map((r) => {
        const topic = stateSyncTopic(r.table_name)
        const key = rowKey(r.key)
        const env: SyncEnvelope = {
          event_id: r.event_id,
          source_id: r.source_id,
          topic,
          ts: r.ts,
          seq: r.seq,
          schema: SYNC_SCHEMA_VERSION,
          key,
          payload: {table: r.table_name, op: r.op, key: r.key, version: r.version, row: r.op === 'delete' ? null : r.row_data},
        }
        return {topic, key, value: encodeEnvelope(env), id: r.event_id}
      }),
    )
    await this.o.db.query('UPDATE jil_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)])
    return rows.length
  }

  private async prune(): Promise<void> {
    const now = this.o.clock.now().getTime()
    if (now - this.lastPrune < 60_000) return
    this.lastPrune = now
    await this.o.db.query('DELETE FROM jil_outbox WHERE sent_at < now() - make_interval(secs => $1)', [(this.o.keepSentMs ?? 3_600_000) / 1000])
  }
}
