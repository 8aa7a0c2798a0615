import type {Clock} from '../shared/clock.js'
import type {Queryable} from '../shared/db/types.js'
import type {Transport} from './transport.js'

/** What `jil node sync status` shows and the heartbeat's `sync` block summarises. */
export type SyncStatus = {
  node_id: string
  transport: Transport['kind']
  checked_at: string
  /** Every partition of every synced topic consumed up to its end offset. */
  caught_up: boolean
  /** 0 when caught up; else how old the newest applied change is (or how long sync has run, before the first). */
  lag_s: number
  /** Outbox rows not yet on the bus. */
  outbox_backlog: number
  topics: {topic: string; partitions: number; end_offset: number; position: number; lag: number}[]
  sources: {source_id: string; last_seq: number; events: number; last_ts: string | null}[]
  /** Sequences of a source not seen below its last_seq; one still open while caught up was lost upstream. */
  gaps: {source_id: string; from_seq: number; to_seq: number; missing: number; detected_at: string}[]
}

/** Reads the status from the node database and the bus's end offsets. */
export async function readSyncStatus(o: {
  db: Queryable
  transport: Transport
  topics: readonly string[]
  nodeId: string
  clock: Clock
  /** When sync started here (the lag before the first applied event). */
  since?: Date
}): Promise<SyncStatus> {
  const ends = await o.transport.endOffsets(o.topics)
  const offsets = await o.db.query<{topic: string; partition: number; next_offset: number}>('SELECT topic, partition, next_offset FROM jil_sync_offsets')
  const pos = new Map(offsets.rows.map((r) => [`${r.topic}\0${r.partition}`, r.next_offset]))
  const topics = o.topics.map((topic) => {
    const parts = ends.filter((e) => e.topic === topic)
    const end = parts.reduce((s, p) => s + p.offset, 0)
    const position = parts.reduce((s, p) => s + Math.min(p.offset, pos.get(`${topic}\0${p.partition}`) ?? 0), 0)
    return {topic, partitions: parts.length, end_offset: end, position, lag: end - position}
  })
  const backlog = await o.db.query<{n: number}>('SELECT count(*)::bigint AS n FROM jil_outbox WHERE sent_at IS NULL')
  const sources = await o.db.query<{source_id: string; last_seq: number; events: number; last_ts: Date | null}>(
    'SELECT source_id, last_seq, events, last_ts FROM jil_sync_sources ORDER BY source_id',
  )
  const gaps = await o.db.query<{source_id: string; from_seq: number; to_seq: number; detected_at: Date}>(
    'SELECT source_id, from_seq, to_seq, detected_at FROM jil_sync_gaps ORDER BY source_id, from_seq LIMIT 1000',
  )
  const now = o.clock.now()
  // A topic the bus does not have yet (no partitions) has nothing to catch up on.
  const caughtUp = topics.every((t) => t.lag === 0)
  const newest = sources.rows.reduce<number | undefined>((m, s) => (s.last_ts && (m === undefined || s.last_ts.getTime() > m) ? s.last_ts.getTime() : m), undefined)
  const from = newest ?? o.since?.getTime() ?? now.getTime()
  return {
    node_id: o.nodeId,
    transport: o.transport.kind,
    checked_at: now.toISOString(),
    caught_up: caughtUp,
    lag_s: caughtUp ? 0 : Math.max(0, Math.round((now.getTime() - from) / 100) / 10),
    outbox_backlog: backlog.rows[0]!.n,
    topics,
    sources: sources.rows.map((s) => ({source_id: s.source_id, last_seq: s.last_seq, events: s.events, last_ts: s.last_ts?.toISOString() ?? null})),
    gaps: gaps.rows.map((g) => ({source_id: g.source_id, from_seq: g.from_seq, to_seq: g.to_seq, missing: g.to_seq - g.from_seq + 1, detected_at: g.detected_at.toISOString()})),
  }
}
