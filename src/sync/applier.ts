import type {Logger} from 'pino'

import {JilError, messageOf} from '../shared/errors.js'
import type {Db, Queryable} from '../shared/db/types.js'
import {parseEnvelope, parseStateChange, stateSyncTopic, tableOfTopic, type StateChange, type SyncEnvelope} from '../shared/sync-envelope.js'
import type {SyncTable} from './tables.js'
import type {ConsumedBatch, PartitionOffset, TopicPartition} from './transport.js'

/**
 * The consumer side of sync: applies other nodes' state changes to this node's declared tables.
 * One batch (one partition's records) is one transaction holding everything it decides: the rows
 * changed, the events recorded as applied (de-duplication by event_id), each source's last sequence
 * and gaps, and the partition's next offset. A crash anywhere before COMMIT leaves none of it, and
 * the consumer resumes at the stored offset: nothing lost, nothing applied twice.
 *
 * Concurrent changes to one row converge: the change with the greatest (version, ts, source_id) wins
 * on every node, whatever the order of arrival; jil_sync_rows remembers the winner, tombstones
 * included, so a late older upsert never resurrects a deleted row.
 */

export type ApplyResult = {
  records: number
  /** New events from other nodes (after de-duplication). */
  applied: number
  duplicates: number
  /** This node's own events, skipped (the write already happened here). */
  own: number
  /** Events of tables this node does not declare, or that do not parse: recorded, not applied. */
  ignored: number
  /** Changes that won convergence and reached the table. */
  changed: number
}

export type ApplierOptions = {
  db: Db
  sourceId: string
  tables: readonly SyncTable[]
  log?: Pick<Logger, 'warn'>
  /** Test hook: runs inside the transaction after everything is applied, before COMMIT. */
  beforeCommit?: () => void | Promise<void>
}

/** Attempts of one batch that loses deadlocks or serialization conflicts to services' transactions. */
const RETRIES = 5

type Prepared = SyncTable & {quoted: string; columns: string[]; upsertSql: string; deleteSql: string; lockSql: string}

const q = (id: string) => `"${id.replace(/"/g, '""')}"`

/** RFC 3339 with up to 9 fractional digits → microseconds since the epoch (PostgreSQL's precision), for ordering. */
export function tsMicros(ts: string): bigint {
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$/.exec(ts)
  const base = BigInt(Date.parse(`${m?.[1] ?? ts}Z`)) * 1000n
  const frac = BigInt(((m?.[2] ?? '') + '000000').slice(0, 6))
  return base + frac
}

type Candidate = {env: SyncEnvelope; change: StateChange; micros: bigint}

/** The convergence order: version, then timestamp, then source_id (byte order, as COLLATE "C"). */
export function wins(a: Candidate, b: Candidate): boolean {
  if (a.change.version !== b.change.version) return a.change.version > b.change.version
  if (a.micros !== b.micros) return a.micros > b.micros
  return a.env.source_id > b.env.source_id
}

export class Applier {
  private readonly tables = new Map<string, Prepared>()
  private ready = false

  constructor(private readonly o: ApplierOptions) {}

  get topics(): string[] {
    return this.o.tables.map((t) => stateSyncTopic(t.name))
  }

  /** Reads each declared table's columns and checks its key has a unique index (ON CONFLICT needs one). */
  async init(): Promise<void> {
    for (const t of this.o.tables) {
      const cols = await this.o.db.query<{column_name: string}>(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`,
        [t.name],
      )
      if (cols.rows.length === 0) {
        throw new JilError('SYNC_TABLE_MISSING', `the node database has no table ${t.name}, declared for sync`, {hint: 'create it (the services\' migrations) or leave it out of JIL_SYNC_TABLES', status: 500})
      }
      const columns = cols.rows.map((r) => r.column_name)
      for (const c of [...t.key, t.version]) {
        if (!columns.includes(c)) throw new JilError('SYNC_TABLE_INVALID', `table ${t.name} has no column ${c}, declared for sync`, {hint: 'fix JIL_SYNC_TABLES (table:key1+key2:version)', status: 500})
      }
      const unique = await this.o.db.query(
        `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace AND i.indisunique AND i.indpred IS NULL
            AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = $2::text[]`,
        [t.name, [...t.key].sort()],
      )
      if (unique.rowCount === 0) {
        throw new JilError('SYNC_TABLE_INVALID', `table ${t.name} has no unique index on its key (${t.key.join(', ')})`, {hint: 'the declared key must be the primary key or a unique index', status: 500})
      }
      const quoted = q(t.name)
      const keys = t.key.map(q).join(', ')
      const rest = columns.filter((c) => !t.key.includes(c))
      const set = rest.length ? `DO UPDATE SET ${rest.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}` : 'DO NOTHING'
      this.tables.set(t.name, {
        ...t,
        quoted,
        columns,
        upsertSql: `INSERT INTO ${quoted} SELECT * FROM jsonb_populate_recordset(NULL::${quoted}, $1::jsonb) ON CONFLICT (${keys}) ${set}`,
        deleteSql: `DELETE FROM ${quoted} AS t USING jsonb_populate_recordset(NULL::${quoted}, $1::jsonb) AS x WHERE ${t.key.map((k) => `t.${q(k)} = x.${q(k)}`).join(' AND ')}`,
        lockSql: `SELECT 1 FROM ${quoted} AS t JOIN jsonb_populate_recordset(NULL::${quoted}, $1::jsonb) AS x ON ${t.key.map((k) => `t.${q(k)} = x.${q(k)}`).join(' AND ')}
                   ORDER BY ${t.key.map((k) => `t.${q(k)}`).join(', ')} FOR UPDATE OF t`,
      })
    }
    this.ready = true
  }

  /** Where each partition resumes: the stored next offset, or 0 (the beginning: a new node replays all). */
  async position(assigned: readonly TopicPartition[]): Promise<PartitionOffset[]> {
    const {rows} = await this.o.db.query<{topic: string; partition: number; next_offset: number}>(
      'SELECT topic, partition, next_offset FROM jil_sync_offsets WHERE topic = ANY($1::text[])',
      [[...new Set(assigned.map((a) => a.topic))]],
    )
    return assigned.map((tp) => ({...tp, offset: rows.find((r) => r.topic === tp.topic && r.partition === tp.partition)?.next_offset ?? 0}))
  }

  async apply(batch: ConsumedBatch): Promise<ApplyResult> {
    if (!this.ready) throw new JilError('INTERNAL', 'the applier was not initialised')
    const result: ApplyResult = {records: batch.records.length, applied: 0, duplicates: 0, own: 0, ignored: 0, changed: 0}
    const candidates: Candidate[] = []
    for (const r of batch.records) {
      let env: SyncEnvelope
      let change: StateChange
      try {
        env = parseEnvelope(r.value)
        const table = tableOfTopic(env.topic)
        if (!table || !this.tables.has(table)) {
          result.ignored++
          continue
        }
        change = parseStateChange(env)
      } catch (err) {
        // A malformed event cannot become valid by waiting: logged and passed, or it blocks the partition forever.
        this.o.log?.warn({topic: batch.topic, partition: batch.partition, offset: r.offset, err: messageOf(err)}, 'sync event refused')
        result.ignored++
        continue
      }
      if (env.source_id === this.o.sourceId) {
        result.own++
        continue
      }
      candidates.push({env, change, micros: tsMicros(env.ts)})
    }
    const next = batch.records.at(-1)!.offset + 1
    // A service's transaction may lock the same rows in another order than ours: PostgreSQL then
    // breaks the deadlock by failing one side. If that is us, the whole batch runs again (nothing of
    // a failed attempt stays); after a few tries the error goes up and the consumer retries later.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.applyOnce(batch, candidates, next, result)
        return result
      } catch (err) {
        const code = (err as {code?: unknown}).code
        if ((code !== '40P01' && code !== '40001') || attempt >= RETRIES) throw err
        this.o.log?.warn({topic: batch.topic, partition: batch.partition, attempt, code}, 'sync batch lost a lock conflict; retrying')
        await new Promise((r) => setTimeout(r, 20 * attempt + Math.random() * 30))
      }
    }
  }

  private async applyOnce(batch: ConsumedBatch, candidates: Candidate[], next: number, result: ApplyResult): Promise<void> {
    await this.o.db.transaction(async (tx) => {
      // Safe without waiting for the flush: a server crash loses these changes and their offset
      // together, and the consumer then reads them from the bus again.
      await tx.query('SET LOCAL synchronous_commit = off')
      const fresh = await this.dedupe(tx, candidates)
      result.applied = fresh.length
      result.duplicates = candidates.length - fresh.length
      result.changed = await this.applyChanges(tx, fresh)
      await this.trackSources(tx, fresh)
      await tx.query(
        `INSERT INTO jil_sync_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(jil_sync_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()`,
        [batch.topic, batch.partition, next],
      )
      await this.o.beforeCommit?.()
    })
  }

  /** Records the events as applied; returns those not seen before (first of any repeats within the batch). */
  private async dedupe(tx: Queryable, cs: Candidate[]): Promise<Candidate[]> {
    if (cs.length === 0) return []
    const {rows} = await tx.query<{event_id: string}>(
      `INSERT INTO jil_sync_applied (event_id, source_id, seq)
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[]) ON CONFLICT (event_id) DO NOTHING RETURNING event_id`,
      [cs.map((c) => c.env.event_id), cs.map((c) => c.env.source_id), cs.map((c) => c.env.seq)],
    )
    const isNew = new Set(rows.map((r) => r.event_id))
    return cs.filter((c) => isNew.delete(c.env.event_id))
  }

  /** Convergence, then the winning changes into the tables; returns how many reached a table. */
  private async applyChanges(tx: Queryable, cs: Candidate[]): Promise<number> {
    const byTable = new Map<string, Map<string, Candidate>>()
    for (const c of cs) {
      let m = byTable.get(c.change.table)
      if (!m) byTable.set(c.change.table, (m = new Map()))
      const k = JSON.stringify(c.change.key)
      const cur = m.get(k)
      // Within a batch the greatest change per row is the only one that can win.
      if (!cur || wins(c, cur)) m.set(k, c)
    }
    let changed = 0
    for (const [table, m] of byTable) {
      const t = this.tables.get(table)!
      const keyCols = (c: Candidate) => Object.fromEntries(t.key.map((k, i) => [k, c.change.key[i]]))
      // Services change a row, then its ownership (jil_emit, in their transaction): take locks in the
      // same order — this batch's existing rows first, in key order, then their ownership rows in
      // key order — so a service writing one row waits for us or we for it, never both.
      const list = [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c)
      await tx.query(t.lockSql, [JSON.stringify(list.map(keyCols))])
      // Returns the positions (in `list`) of the changes that won against what this node had.
      const won = await tx.query<{i: number}>(
        `WITH x AS (SELECT x.k::text AS k, x.v, x.t, x.s, x.d, x.i
                      FROM jsonb_to_recordset($2::jsonb) AS x(k jsonb, v bigint, t timestamptz, s text, d boolean, i int)),
              won AS (INSERT INTO jil_sync_rows AS m (table_name, key, version, ts, source_id, deleted)
                      SELECT $1, x.k, x.v, x.t, x.s, x.d FROM x
                      ON CONFLICT (table_name, key) DO UPDATE
                        SET version = EXCLUDED.version, ts = EXCLUDED.ts, source_id = EXCLUDED.source_id, deleted = EXCLUDED.deleted
                        WHERE (EXCLUDED.version, EXCLUDED.ts, EXCLUDED.source_id COLLATE "C") > (m.version, m.ts, m.source_id COLLATE "C")
                      RETURNING key)
         SELECT x.i FROM x JOIN won ON won.key = x.k`,
        [table, JSON.stringify(list.map((c, i) => ({k: c.change.key, v: c.change.version, t: c.env.ts, s: c.env.source_id, d: c.change.op === 'delete', i})))],
      )
      const winners = new Set(won.rows.map((r) => Number(r.i)))
      const upserts: Record<string, unknown>[] = []
      const deletes: Record<string, unknown>[] = []
      for (const [i, c] of list.entries()) {
        if (!winners.has(i)) continue
        const key = keyCols(c)
        if (c.change.op === 'delete') deletes.push(key)
        else upserts.push({...c.change.row, ...key, [t.version]: c.change.version})
      }
      if (upserts.length) await tx.query(t.upsertSql, [JSON.stringify(upserts)])
      if (deletes.length) await tx.query(t.deleteSql, [JSON.stringify(deletes)])
      changed += upserts.length + deletes.length
    }
    return changed
  }

  /** Each source's last sequence, count of events and gaps: new gaps open, late events close them. */
  private async trackSources(tx: Queryable, cs: Candidate[]): Promise<void> {
    if (cs.length === 0) return
    const bySource = new Map<string, {seqs: number[]; lastTs: string; lastMicros: bigint}>()
    for (const c of cs) {
      let s = bySource.get(c.env.source_id)
      if (!s) bySource.set(c.env.source_id, (s = {seqs: [], lastTs: c.env.ts, lastMicros: c.micros}))
      s.seqs.push(c.env.seq)
      if (c.micros > s.lastMicros) {
        s.lastMicros = c.micros
        s.lastTs = c.env.ts
      }
    }
    const sources = [...bySource.keys()].sort()
    const known = await tx.query<{source_id: string; last_seq: number}>('SELECT source_id, last_seq FROM jil_sync_sources WHERE source_id = ANY($1::text[]) ORDER BY source_id FOR UPDATE', [sources])
    const lastOf = new Map(known.rows.map((r) => [r.source_id, r.last_seq]))
    const updates: {s: string; last: number; n: number; ts: string}[] = []
    const opened: {s: string; from: number; to: number}[] = []
    for (const source of sources) {
      const info = bySource.get(source)!
      const seqs = [...info.seqs].sort((a, b) => a - b)
      let last = lastOf.get(source) ?? 0
      const late: number[] = []
      for (const seq of seqs) {
        if (seq > last + 1) opened.push({s: source, from: last + 1, to: seq - 1})
        if (seq > last) last = seq
        else late.push(seq)
      }
      updates.push({s: source, last, n: seqs.length, ts: info.lastTs})
      if (late.length) await this.closeGaps(tx, source, late)
    }
    await tx.query(
      `INSERT INTO jil_sync_sources AS s (source_id, last_seq, events, last_ts)
       SELECT x.s, x.last, x.n, x.ts FROM jsonb_to_recordset($1::jsonb) AS x(s text, last bigint, n bigint, ts timestamptz)
       ON CONFLICT (source_id) DO UPDATE SET last_seq = GREATEST(s.last_seq, EXCLUDED.last_seq), events = s.events + EXCLUDED.events,
         last_ts = GREATEST(s.last_ts, EXCLUDED.last_ts), updated_at = now()`,
      [JSON.stringify(updates)],
    )
    if (opened.length) {
      await tx.query(
        `INSERT INTO jil_sync_gaps (source_id, from_seq, to_seq) SELECT x.s, x.f, x.t FROM jsonb_to_recordset($1::jsonb) AS x(s text, f bigint, t bigint) ON CONFLICT DO NOTHING`,
        [JSON.stringify(opened.map((g) => ({s: g.s, f: g.from, t: g.to})))],
      )
    }
  }

  /** Late sequences (below last_seq) fill gaps: the gaps holding them are cut around them. */
  private async closeGaps(tx: Queryable, source: string, late: number[]): Promise<void> {
    const lo = late[0]!
    const hi = late.at(-1)!
    const {rows} = await tx.query<{from_seq: number; to_seq: number; detected_at: Date}>(
      'DELETE FROM jil_sync_gaps WHERE source_id = $1 AND to_seq >= $2 AND from_seq <= $3 RETURNING from_seq, to_seq, detected_at',
      [source, lo, hi],
    )
    if (rows.length === 0) return
    const remnants: {f: number; t: number; at: Date}[] = []
    for (const g of rows) {
      let start = g.from_seq
      // Walk only the filled seqs inside this gap (sorted), emitting the runs between them.
      for (const seq of late) {
        if (seq < g.from_seq || seq > g.to_seq) continue
        if (seq > start) remnants.push({f: start, t: seq - 1, at: g.detected_at})
        start = seq + 1
      }
      if (start <= g.to_seq) remnants.push({f: start, t: g.to_seq, at: g.detected_at})
    }
    if (remnants.length) {
      await tx.query(
        // A remnant keeps the gap's first sighting: how long an event has been missing is what matters.
        `INSERT INTO jil_sync_gaps (source_id, from_seq, to_seq, detected_at) SELECT $1, x.f, x.t, x.at FROM jsonb_to_recordset($2::jsonb) AS x(f bigint, t bigint, at timestamptz)`,
        [source, JSON.stringify(remnants)],
      )
    }
  }
}
