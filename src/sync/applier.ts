import type {Logger} from 'pino'

import {JilError, messageOf} from '../shared/errors.js'
import type {Db, Queryable} from '../shared/db/types.js'
import {lowerBound} from '../shared/sorted.js'
import {parseEnvelope, parseStateChange, stateSyncTopic, tableOfTopic, type StateChange, type SyncEnvelope} from '../shared/sync-envelope.js'
import type {SyncTable} from './tables.js'
import type {ConsumedBatch, PartitionOffset, TopicPartition} from './transport.js'

/**
 * The consumer side of sync: applies other nodes' state changes to this node's declared tables.
 * One batch (one partition's records) is one transaction holding everything it decides: the rows
 * changed, the events recorded as applied, each source's last sequence and gaps, and the partition's
 * next offset. A crash anywhere before COMMIT leaves none of it, and the consumer resumes at the
 * stored offset: nothing lost, nothing applied twice.
 *
 * Concurrent changes to one row converge: the change with the greatest (version, ts, source_id) wins
 * on every node, whatever the order of arrival; jil_sync_rows remembers the winner, tombstones
 * included, so a late older upsert never resurrects a deleted row.
 *
 * De-duplication is exact and bounded. A source numbers its events 1, 2, 3, … once and for good, so
 * at or below its contiguous watermark (the highest seq with no open gap at or below it) an event is
 * known applied by its seq alone; above it, by its event_id row in jil_sync_applied. Rows at or
 * below the watermark are then redundant, and pruneApplied removes them once they are older than a
 * retention. (A source whose sequence restarts must therefore come back under a new node id.)
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

/**
 * A source's contiguous watermark, for a row `s` of jil_sync_sources: every seq at or below it has
 * been applied (the first open gap starts above it; with none, it is last_seq).
 */
const WATERMARK_SQL = 'COALESCE((SELECT min(g.from_seq) FROM jil_sync_gaps g WHERE g.source_id = s.source_id) - 1, s.last_seq)'

/** A declared table and the statements that apply changes to it. */
type Prepared = SyncTable & {
  /** SQL types of the key columns: keys travel as typed arrays. */
  keyTypes: string[]
  /** Locks the batch's existing rows in the arrays' order; returns their positions (1-based) in them. */
  lockSql: string
  /** Rows known to exist (locked): a plain UPDATE. Undefined when the table has nothing besides its key. */
  updateSql: string | undefined
  /** Rows not there at lock time; ON CONFLICT covers one a service inserts meanwhile. */
  insertSql: string
  deleteSql: string
}

/** What the batch knows of a source, read under its row lock: last seq seen and contiguous watermark. */
type SourceMark = {last: number; watermark: number}

type Candidate = {env: SyncEnvelope; change: StateChange; /** The key values as JSON: one row's identity within a table. */ k: string}

/** One row's change in a plan: the candidate that wins the row within the batch, and the row it writes (JSON; none for a delete). */
type Planned = {c: Candidate; json: string | undefined}

/** The changes of one table in a batch, one per row, in key order. */
type TablePlan = {t: Prepared; rows: Planned[]}

/**
 * A batch decoded and planned, before any database work: what prefetch makes while the batch before
 * it is still being applied. Holds no state of the database (that is read under locks in apply).
 */
type PreparedBatch = {
  topic: string
  partition: number
  /** The partition's next offset once this batch is applied. */
  next: number
  /** records, own, ignored and the duplicates within the batch; the rest is counted by apply. */
  counts: ApplyResult
  /** The events that may be new: other nodes' valid changes, each event_id once. */
  candidates: Candidate[]
  plan: TablePlan[]
}

/** Records decoded between two yields when preparing ahead, so that the batch being applied meanwhile is not held up (about 2 ms). */
const PREFETCH_SLICE = 250

const q = (id: string) => `"${id.replace(/"/g, '""')}"`

const refused = (why: string) => new JilError('SYNC_EVENT_INVALID', `a sync event was refused: ${why}`, {hint: 'the producing node runs an incompatible jil; upgrade it', status: 400})

/** A PostgreSQL array literal of values that need no quoting (numbers, uuids, node ids, timestamps). */
const plainArray = (values: readonly (string | number | boolean)[]): string => `{${values.join(',')}}`

/** `2026-03-01T12:00:00.1234567Z` → [seconds since the epoch, microseconds], rounded as PostgreSQL rounds fractions (rint). */
function tsParts(ts: string): [number, number] {
  // The envelope's schema fixes the shape: YYYY-MM-DDTHH:MM:SS, an optional fraction, Z.
  const seconds = Date.parse(`${ts.slice(0, 19)}Z`) / 1000
  if (ts.length === 20) return [seconds, 0]
  const x = Number(`0${ts.slice(19, -1)}`) * 1e6
  const r = Math.round(x)
  // Half-way cases go to the even neighbour, as C's rint() does.
  const us = r - x === 0.5 && r % 2 !== 0 ? r - 1 : r
  return us === 1e6 ? [seconds + 1, 0] : [seconds, us]
}

/** Orders two envelope timestamps as PostgreSQL orders them once stored (timestamptz: microseconds). */
export function compareTs(a: string, b: string): number {
  if (a === b) return 0
  // Same shape with at most microseconds (what relays write): the text order is the time order.
  if (a.length === b.length && a.length <= 27) return a < b ? -1 : 1
  const [as, au] = tsParts(a)
  const [bs, bu] = tsParts(b)
  return as !== bs ? as - bs : au - bu
}

/** The convergence order: version, then timestamp, then source_id (byte order, as COLLATE "C"). */
export function wins(a: Pick<Candidate, 'env' | 'change'>, b: Pick<Candidate, 'env' | 'change'>): boolean {
  if (a.change.version !== b.change.version) return a.change.version > b.change.version
  const t = compareTs(a.env.ts, b.env.ts)
  if (t !== 0) return t > 0
  return a.env.source_id > b.env.source_id
}

export class Applier {
  private readonly tables = new Map<string, Prepared>()
  /** Batches being prepared ahead (prefetch), until apply takes them. */
  private readonly pending = new WeakMap<ConsumedBatch, Promise<PreparedBatch>>()
  private ready = false

  constructor(private readonly o: ApplierOptions) {}

  get topics(): string[] {
    return this.o.tables.map((t) => stateSyncTopic(t.name))
  }

  /** Reads each declared table's columns and checks its key has a unique index (ON CONFLICT needs one). */
  async init(): Promise<void> {
    for (const t of this.o.tables) {
      const cols = await this.o.db.query<{name: string; type: string; generated: boolean}>(
        `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
            AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum`,
        [t.name],
      )
      if (cols.rows.length === 0) {
        throw new JilError('SYNC_TABLE_MISSING', `the node database has no table ${t.name}, declared for sync`, {hint: 'create it (the services\' migrations) or leave it out of JIL_SYNC_TABLES', status: 500})
      }
      const typeOf = new Map(cols.rows.map((r) => [r.name, r.type]))
      for (const c of [...t.key, t.version]) {
        if (!typeOf.has(c)) throw new JilError('SYNC_TABLE_INVALID', `table ${t.name} has no column ${c}, declared for sync`, {hint: 'fix JIL_SYNC_TABLES (table:key1+key2:version)', status: 500})
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
      const keyTypes = t.key.map((k) => typeOf.get(k)!)
      // Generated columns are the database's to compute: never written.
      const written = cols.rows.filter((r) => !r.generated).map((r) => r.name)
      const rest = written.filter((c) => !t.key.includes(c))
      const keyArgs = keyTypes.map((ty, i) => `$${i + 1}::${ty}[]`).join(', ')
      const keyAlias = t.key.map((_, i) => `k${i}`).join(', ')
      const onKeys = (a: string, b: string) => t.key.map((k, i) => `${a}.${q(k)} = ${b}.k${i}`).join(' AND ')
      const onCols = (a: string, b: string) => t.key.map((k) => `${a}.${q(k)} = ${b}.${q(k)}`).join(' AND ')
      // json, not jsonb: each row is read once, field by field; the binary form would only be extra work.
      // Joined to the table (UPDATE, DELETE), it also keeps the planner on index lookups: it guesses a
      // few rows for it, where an unnest of known length can make a whole-table hash look cheaper.
      const rows = `json_populate_recordset(NULL::${quoted}, $1::json)`
      this.tables.set(t.name, {
        ...t,
        keyTypes,
        // One index lookup per key, in the arrays' order: a LATERAL subquery with FOR UPDATE stays a
        // nested loop (joined plainly, a long key list would make the planner hash the whole table).
        lockSql: `SELECT x.n FROM unnest(${keyArgs}) WITH ORDINALITY AS x(${keyAlias}, n)
                   CROSS JOIN LATERAL (SELECT 1 FROM ${quoted} AS t WHERE ${onKeys('t', 'x')} FOR UPDATE) AS l`,
        updateSql: rest.length ? `UPDATE ${quoted} AS t SET ${rest.map((c) => `${q(c)} = x.${q(c)}`).join(', ')} FROM ${rows} AS x WHERE ${onCols('t', 'x')}` : undefined,
        insertSql: `INSERT INTO ${quoted} (${written.map(q).join(', ')}) SELECT ${written.map(q).join(', ')} FROM ${rows}
                    ON CONFLICT (${t.key.map(q).join(', ')}) ${rest.length ? `DO UPDATE SET ${rest.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}` : 'DO NOTHING'}`,
        deleteSql: `DELETE FROM ${quoted} AS t USING ${rows} AS x WHERE ${onCols('t', 'x')}`,
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

  /**
   * Starts decoding and planning `batch` now, a few hundred records at a time between other work, so
   * that it overlaps the batch being applied (the transports call this through onFetched while
   * the previous batch is in its transaction). apply(batch) then takes the result instead of doing
   * the work itself. Optional: apply without it does the same work at once.
   */
  prefetch(batch: ConsumedBatch): void {
    if (!this.ready || this.pending.has(batch)) return
    const p = this.prepare(batch, PREFETCH_SLICE)
    // A batch prefetched but never applied (the consumer stopped) must not leave an unhandled rejection.
    p.catch(() => {})
    this.pending.set(batch, p)
  }

  async apply(batch: ConsumedBatch): Promise<ApplyResult> {
    if (!this.ready) throw new JilError('INTERNAL', 'the applier was not initialised')
    const prepared = await (this.pending.get(batch) ?? this.prepare(batch, Infinity))
    this.pending.delete(batch)
    // A service's transaction may lock the same rows in another order than ours: PostgreSQL then
    // breaks the deadlock by failing one side. If that is us, the whole batch runs again (nothing of
    // a failed attempt stays); after a few tries the error goes up and the consumer retries later.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.applyOnce(prepared)
      } catch (err) {
        const code = (err as {code?: unknown}).code
        if ((code !== '40P01' && code !== '40001') || attempt >= RETRIES) throw err
        this.o.log?.warn({topic: batch.topic, partition: batch.partition, attempt, code}, 'sync batch lost a lock conflict; retrying')
        await new Promise((r) => setTimeout(r, 20 * attempt + Math.random() * 30))
      }
    }
  }

  /**
   * Decodes a batch (parse and check each envelope, skip this node's own events and repeats within
   * the batch) and plans its changes. Pure JavaScript, no database: yields to the event loop every
   * `slice` records so that it can run beside a batch in its transaction.
   */
  private async prepare(batch: ConsumedBatch, slice: number): Promise<PreparedBatch> {
    const counts: ApplyResult = {records: batch.records.length, applied: 0, duplicates: 0, own: 0, ignored: 0, changed: 0}
    const candidates: Candidate[] = []
    const inBatch = new Set<string>()
    // Only state tables are applied: a record of any other topic (jil.fleet.status heartbeats,
    // jil.events, …) or of a table this node does not declare is passed, its offset kept.
    const tableOf = tableOfTopic(batch.topic)
    const declared = tableOf !== undefined && this.tables.has(tableOf)
    let n = 0
    for (const r of batch.records) {
      if (++n % slice === 0) await new Promise((resolve) => setImmediate(resolve))
      if (!declared) {
        counts.ignored++
        continue
      }
      let env: SyncEnvelope
      let change: StateChange
      try {
        // A string, not the Buffer: parseEnvelope would copy a Buffer before decoding it.
        env = parseEnvelope(r.value.toString('utf8'))
        if (env.topic !== batch.topic) throw refused(`it names topic ${env.topic} but came on ${batch.topic}`)
        change = parseStateChange(env)
        // What PostgreSQL would refuse (bigint range, a time that does not exist) would fail the whole batch, again and again.
        if (!Number.isSafeInteger(env.seq) || !Number.isSafeInteger(change.version)) throw refused('its seq or version is out of range')
        if (Number.isNaN(Date.parse(`${env.ts.slice(0, 19)}Z`))) throw refused(`its time ${env.ts} does not exist`)
      } catch (err) {
        // A malformed event cannot become valid by waiting: logged and passed, or it blocks the partition forever.
        this.o.log?.warn({topic: batch.topic, partition: batch.partition, offset: r.offset, err: messageOf(err)}, 'sync event refused')
        counts.ignored++
        continue
      }
      if (env.source_id === this.o.sourceId) {
        counts.own++
        continue
      }
      // The same event twice in one batch: the second is a duplicate before the database is asked.
      if (inBatch.has(env.event_id)) {
        counts.duplicates++
        continue
      }
      inBatch.add(env.event_id)
      candidates.push({env, change, k: JSON.stringify(change.key)})
    }
    return {topic: batch.topic, partition: batch.partition, next: batch.records.at(-1)!.offset + 1, counts, candidates, plan: this.plan(candidates)}
  }

  private async applyOnce(b: PreparedBatch): Promise<ApplyResult> {
    const result = {...b.counts}
    await this.o.db.transaction(async (tx) => {
      // Safe without waiting for the flush: a server crash loses these changes and their offset
      // together, and the consumer then reads them from the bus again.
      await tx.query('SET LOCAL synchronous_commit = off')
      const marks = await this.lockSources(tx, b.candidates)
      const fresh = await this.dedupe(tx, b.candidates, marks)
      result.applied = fresh.length
      result.duplicates += b.candidates.length - fresh.length
      result.changed = await this.applyPlan(tx, this.withoutSeen(b.plan, fresh, b.candidates.length))
      await this.record(tx, fresh, marks)
      await this.trackSources(tx, fresh, marks)
      await tx.query(
        `INSERT INTO jil_sync_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(jil_sync_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()`,
        [b.topic, b.partition, b.next],
      )
      await this.o.beforeCommit?.()
    })
    return result
  }

  /**
   * Locks the batch's sources (in source order; a first-seen source gets its row first, so that the
   * lock holds for it too) and reads each one's last seq and watermark. Held to COMMIT, the lock keeps
   * pruneApplied from removing event_id rows between this read and the de-duplication, and
   * serialises batches that track the same source.
   */
  private async lockSources(tx: Queryable, cs: readonly Candidate[]): Promise<Map<string, SourceMark>> {
    const marks = new Map<string, SourceMark>()
    if (cs.length === 0) return marks
    const sources = [...new Set(cs.map((c) => c.env.source_id))].sort()
    const read = async (ids: string[]) => {
      const {rows} = await tx.query<{source_id: string; last_seq: number; watermark: number}>(
        `SELECT s.source_id, s.last_seq, ${WATERMARK_SQL} AS watermark
           FROM jil_sync_sources s WHERE s.source_id = ANY($1::text[]) ORDER BY s.source_id FOR UPDATE OF s`,
        [ids],
      )
      for (const r of rows) marks.set(r.source_id, {last: r.last_seq, watermark: r.watermark})
    }
    await read(sources)
    const unknown = sources.filter((s) => !marks.has(s))
    if (unknown.length) {
      await tx.query('INSERT INTO jil_sync_sources (source_id, last_seq) SELECT unnest($1::text[]), 0 ON CONFLICT (source_id) DO NOTHING', [unknown])
      await read(unknown)
    }
    return marks
  }

  /**
   * The events not applied before. By seq first: at or below the source's watermark an event was
   * applied; above its last seq it never was. Only those in between (a late event, or one sent again,
   * while a gap is open) are looked up by event_id: rows above the watermark are never pruned, so an
   * event there was applied exactly when its row is there.
   */
  private async dedupe(tx: Queryable, cs: Candidate[], marks: ReadonlyMap<string, SourceMark>): Promise<Candidate[]> {
    const open: Candidate[] = []
    const between: string[] = []
    for (const c of cs) {
      const m = marks.get(c.env.source_id)
      if (m && c.env.seq <= m.watermark) continue
      open.push(c)
      if (m && c.env.seq <= m.last) between.push(c.env.event_id)
    }
    if (between.length === 0) return open.length === cs.length ? cs : open
    const {rows} = await tx.query<{event_id: string}>('SELECT event_id FROM jil_sync_applied WHERE event_id = ANY($1::uuid[])', [plainArray(between)])
    if (rows.length === 0) return open
    const seen = new Set(rows.map((r) => r.event_id))
    return open.filter((c) => !seen.has(c.env.event_id))
  }

  /**
   * The plan without the events found applied before (planned ahead, it covered every candidate). A
   * row whose winner was such an event goes to the best fresh change of that row, if there is one;
   * every other row keeps its planned change and its JSON.
   */
  private withoutSeen(plan: TablePlan[], fresh: readonly Candidate[], planned: number): TablePlan[] {
    if (fresh.length === planned) return plan
    const kept = new Set(fresh)
    return plan.map((p) => {
      if (p.rows.every((r) => kept.has(r.c))) return p
      // The rows that lost their winner, and the best fresh change of each (one pass over the batch).
      const best = new Map<string, Candidate | undefined>()
      for (const r of p.rows) if (!kept.has(r.c)) best.set(r.c.k, undefined)
      for (const c of fresh) {
        if (c.change.table !== p.t.name || !best.has(c.k)) continue
        const cur = best.get(c.k)
        if (!cur || wins(c, cur)) best.set(c.k, c)
      }
      const rows: Planned[] = []
      for (const r of p.rows) {
        if (kept.has(r.c)) rows.push(r)
        else {
          const c = best.get(r.c.k)
          if (c) rows.push({c, json: this.rowJson(p.t, c)})
        }
      }
      return {t: p.t, rows}
    })
  }

  /**
   * Records by event_id the fresh events that this batch leaves above their source's watermark (the
   * others are known by seq from COMMIT on). The watermark after the batch is at least the old one
   * plus the run of this batch's seqs right above it: every event above that bound is recorded.
   */
  private async record(tx: Queryable, fresh: readonly Candidate[], marks: ReadonlyMap<string, SourceMark>): Promise<void> {
    const seqsOf = new Map<string, number[]>()
    for (const c of fresh) {
      let l = seqsOf.get(c.env.source_id)
      if (!l) seqsOf.set(c.env.source_id, (l = []))
      l.push(c.env.seq)
    }
    const bound = new Map<string, number>()
    for (const [source, seqs] of seqsOf) {
      let w = marks.get(source)?.watermark ?? 0
      for (const seq of seqs.sort((a, b) => a - b)) {
        if (seq !== w + 1) break
        w = seq
      }
      bound.set(source, w)
    }
    const above = fresh.filter((c) => c.env.seq > bound.get(c.env.source_id)!)
    if (above.length === 0) return
    await tx.query(
      `INSERT INTO jil_sync_applied (event_id, source_id, seq) SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[]) ON CONFLICT (event_id) DO NOTHING`,
      [plainArray(above.map((c) => c.env.event_id)), plainArray(above.map((c) => c.env.source_id)), plainArray(above.map((c) => c.env.seq))],
    )
  }

  /** Convergence within the batch (per row, only its greatest change can win) and each table's payloads. */
  private plan(cs: readonly Candidate[]): TablePlan[] {
    const byTable = new Map<string, Map<string, Candidate>>()
    for (const c of cs) {
      let m = byTable.get(c.change.table)
      if (!m) byTable.set(c.change.table, (m = new Map()))
      const cur = m.get(c.k)
      if (!cur || wins(c, cur)) m.set(c.k, c)
    }
    const plans: TablePlan[] = []
    for (const [table, m] of byTable) {
      const t = this.tables.get(table)!
      const list = [...m.values()].sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
      plans.push({t, rows: list.map((c) => ({c, json: this.rowJson(t, c)}))})
    }
    return plans
  }

  /** The row an upsert writes, as JSON. The change's key and version are authoritative; a row that agrees with them (the usual case) is sent as it came. */
  private rowJson(t: Prepared, c: Candidate): string | undefined {
    if (c.change.op === 'delete') return undefined
    const row = c.change.row!
    const agrees = row[t.version] === c.change.version && t.key.every((k, i) => row[k] === c.change.key[i])
    return JSON.stringify(agrees ? row : {...row, ...Object.fromEntries(t.key.map((k, i) => [k, c.change.key[i]])), [t.version]: c.change.version})
  }

  /** The planned changes into the tables; returns how many reached a table. */
  private async applyPlan(tx: Queryable, plans: readonly TablePlan[]): Promise<number> {
    let changed = 0
    for (const {t, rows} of plans) {
      if (rows.length === 0) continue
      const keyArrays = t.key.map((_, i) => rows.map((r) => r.c.change.key[i]))
      // Services change a row, then its ownership (jil_emit, in their transaction): take locks in the
      // same order — this batch's existing rows first, in key order, then their ownership rows in
      // key order — so a service writing one row waits for us or we for it, never both. (The two
      // statements go out together; PostgreSQL runs the second once the first has its locks.)
      // The changes that win against what this node had take the rows' ownership; the key is stored
      // as PostgreSQL renders it as jsonb (as jil_emit stores it), and RETURNING gives that rendering
      // back, which JSON.parse/stringify brings to the form the plan is keyed by.
      const [locked, won] = await Promise.all([
        tx.query<{n: number}>(t.lockSql, keyArrays),
        tx.query<{key: string}>(
          `INSERT INTO jil_sync_rows AS m (table_name, key, version, ts, source_id, deleted)
           SELECT $1, x.k::jsonb::text, x.v, x.t, x.s, x.d FROM unnest($2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::boolean[]) AS x(k, v, t, s, d)
           ON CONFLICT (table_name, key) DO UPDATE
             SET version = EXCLUDED.version, ts = EXCLUDED.ts, source_id = EXCLUDED.source_id, deleted = EXCLUDED.deleted
             WHERE (EXCLUDED.version, EXCLUDED.ts, EXCLUDED.source_id COLLATE "C") > (m.version, m.ts, m.source_id COLLATE "C")
           RETURNING key`,
          [
            t.name,
            rows.map((r) => r.c.k),
            plainArray(rows.map((r) => r.c.change.version)),
            plainArray(rows.map((r) => r.c.env.ts)),
            plainArray(rows.map((r) => r.c.env.source_id)),
            plainArray(rows.map((r) => r.c.change.op === 'delete')),
          ],
        ),
      ])
      const existing = new Set(locked.rows.map((r) => Number(r.n) - 1))
      // Most keys come back as the plan spells them (a string key renders alike): parsed only when not.
      const planned = new Set(rows.map((r) => r.c.k))
      const winners = new Set(won.rows.map((r) => (planned.has(r.key) ? r.key : JSON.stringify(JSON.parse(r.key)))))
      const updates: string[] = []
      const inserts: string[] = []
      const deleted: number[] = []
      for (const [i, r] of rows.entries()) {
        if (!winners.has(r.c.k)) continue
        if (r.json === undefined) deleted.push(i)
        else if (existing.has(i)) updates.push(r.json)
        else inserts.push(r.json)
      }
      const writes: Promise<unknown>[] = []
      if (updates.length && t.updateSql) writes.push(tx.query(t.updateSql, [`[${updates.join(',')}]`]))
      if (inserts.length) writes.push(tx.query(t.insertSql, [`[${inserts.join(',')}]`]))
      if (deleted.length) writes.push(tx.query(t.deleteSql, [JSON.stringify(deleted.map((i) => Object.fromEntries(t.key.map((k, j) => [k, keyArrays[j]![i]]))))]))
      await Promise.all(writes)
      changed += updates.length + inserts.length + deleted.length
    }
    return changed
  }

  /** Each source's last sequence, count of events and gaps: new gaps open, late events close them. */
  private async trackSources(tx: Queryable, cs: readonly Candidate[], marks: ReadonlyMap<string, SourceMark>): Promise<void> {
    if (cs.length === 0) return
    const bySource = new Map<string, {seqs: number[]; lastTs: string}>()
    for (const c of cs) {
      let s = bySource.get(c.env.source_id)
      if (!s) bySource.set(c.env.source_id, (s = {seqs: [], lastTs: c.env.ts}))
      s.seqs.push(c.env.seq)
      if (compareTs(c.env.ts, s.lastTs) > 0) s.lastTs = c.env.ts
    }
    const sources = [...bySource.keys()].sort()
    const updates: {s: string; last: number; n: number; ts: string}[] = []
    const opened: {s: string; from: number; to: number}[] = []
    for (const source of sources) {
      const info = bySource.get(source)!
      const seqs = [...info.seqs].sort((a, b) => a - b)
      let last = marks.get(source)?.last ?? 0
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
      // Walk only the filled seqs inside this gap (late is sorted), emitting the runs between them:
      // a replay over several partitions closes thousands of gaps per batch.
      for (let i = lowerBound(late, g.from_seq, (a, b) => a - b); i < late.length && late[i]! <= g.to_seq; i++) {
        const seq = late[i]!
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

export type PruneResult = {
  /** event_id rows removed: their events are now recognised by their source's watermark. */
  pruned: number
}

/**
 * Bounds jil_sync_applied: removes the event_id rows at or below their source's watermark that are
 * older than `retentionMs` (by `now`, the caller's clock). A redelivered event among them is still a
 * duplicate: its seq is at or below the watermark, which never goes down (gaps only close; new ones
 * open above last_seq). Works in rounds of `chunk` rows, each in its own short transaction holding
 * the sources' rows, so batches being applied wait for one round at most and never see a watermark
 * older than the rows already removed.
 */
export async function pruneApplied(db: Db, o: {now: Date; retentionMs: number; chunk?: number}): Promise<PruneResult> {
  const cutoff = new Date(o.now.getTime() - o.retentionMs)
  // UUIDv7 ids start with their creation time: rows created after the cutoff are never looked at
  // (the primary key's range), whatever else the table holds.
  const idBelow = uuidv7Floor(cutoff.getTime())
  const chunk = o.chunk ?? 10_000
  let pruned = 0
  let after = '00000000-0000-0000-0000-000000000000'
  for (;;) {
    const round = await db.transaction(async (tx) => {
      const {rows} = await tx.query<{source_id: string; watermark: number}>(`SELECT s.source_id, ${WATERMARK_SQL} AS watermark FROM jil_sync_sources s ORDER BY s.source_id FOR UPDATE OF s`)
      if (rows.length === 0) return {n: 0, last: null}
      const r = await tx.query<{n: number; last: string | null}>(
        `WITH gone AS (
           DELETE FROM jil_sync_applied WHERE event_id IN (
             SELECT a.event_id FROM jil_sync_applied a JOIN unnest($1::text[], $2::bigint[]) AS w(source_id, watermark) ON w.source_id = a.source_id
              WHERE a.event_id > $3::uuid AND a.event_id < $4::uuid AND a.seq <= w.watermark AND a.applied_at < $5
              ORDER BY a.event_id LIMIT $6)
           RETURNING event_id)
         SELECT count(*)::int AS n, max(event_id::text) AS last FROM gone`,
        [rows.map((x) => x.source_id), rows.map((x) => x.watermark), after, idBelow, cutoff, chunk],
      )
      return r.rows[0]!
    })
    pruned += round.n
    if (round.n < chunk || !round.last) return {pruned}
    // Rows kept (above a watermark) are not scanned again: the next round starts past this one.
    after = round.last
  }
}

/** The smallest UUIDv7 of millisecond `ms`: every id made at or after `ms` sorts above it. */
function uuidv7Floor(ms: number): string {
  const h = Math.max(0, ms).toString(16).padStart(12, '0').slice(-12)
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-7000-8000-000000000000`
}
