import {createHash} from 'node:crypto'

import type {Heartbeat} from '../../shared/api.js'
import type {Clock} from '../../shared/clock.js'
import {LOCKS, type Db} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {PassLoop} from '../../shared/loop.js'

export type HeartbeatIngestOptions = {
  /** A batch is flushed as soon as it holds this many heartbeats (default 200). */
  maxBatch?: number
  /** ...or this long after its first heartbeat arrived (default 10 ms). */
  maxWaitMs?: number
  /** Flushes running at once (default 1 on PGlite, which has one session; 4 on PostgreSQL). */
  maxInFlight?: number
  /** Heartbeats waiting beyond this are refused with 503 at once rather than queued without bound (default 20,000). */
  maxQueued?: number
  /** The nodes of a batch once it has committed, once per batch (the live stream coalesces them; never a NOTIFY per heartbeat). */
  onStored?: (nodeIds: string[]) => void
}

type Pending = {
  nodeId: string
  receivedAt: Date
  hb: Heartbeat
  /** performance.now() when queued: how long the head of the queue has waited. */
  queuedAt: number
  resolve: () => void
  reject: (err: unknown) => void
}

const INT4_MAX = 2 ** 31 - 1
const REAL_MAX = 3.4e38
const clampInt = (n: number, max = INT4_MAX) => Math.max(0, Math.min(max, Math.trunc(n)))
const clampReal = (n: number) => (Number.isFinite(n) ? Math.max(-REAL_MAX, Math.min(REAL_MAX, n)) : 0)
const percent = (used: number, total: number) => (total > 0 ? clampReal((used / total) * 100) : 0)

/** What the history keeps of a heartbeat: counts, load and what runs, not the body. */
export function historySummary(hb: Heartbeat): {
  containers_total: number
  containers_running: number
  containers_unhealthy: number
  cpu_percent: number
  memory_percent: number
  disk_percent: number
  desired_sequence: number
  versions_digest: string
} {
  const h = createHash('sha256')
  for (const s of [...hb.services].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) h.update(`${s.name}\0${s.digest ?? ''}\0${s.version ?? ''}\n`)
  return {
    containers_total: clampInt(hb.containers.total),
    containers_running: clampInt(hb.containers.running),
    containers_unhealthy: clampInt(hb.containers.unhealthy),
    cpu_percent: clampReal(hb.system.cpu_percent),
    memory_percent: percent(hb.system.memory_used_bytes, hb.system.memory_total_bytes),
    disk_percent: clampReal(hb.system.disk_percent),
    desired_sequence: clampInt(hb.desired_sequence, Number.MAX_SAFE_INTEGER),
    versions_digest: h.digest('hex').slice(0, 16),
  }
}

// One statement, so one round trip and atomic without BEGIN/COMMIT: the latest state per node
// (deduplicated by the caller: ON CONFLICT may touch a row once per statement; an older batch
// committing after a newer one never moves a node back in time) and every heartbeat's summary.
const FLUSH_SQL = `
  WITH latest AS (
    INSERT INTO node_heartbeats (node_id, received_at, body)
    SELECT node_id, received_at, body::jsonb FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS t(node_id, received_at, body)
    ON CONFLICT (node_id) DO UPDATE SET received_at = EXCLUDED.received_at, body = EXCLUDED.body
     WHERE node_heartbeats.received_at <= EXCLUDED.received_at
  )
  INSERT INTO node_heartbeat_history (node_id, received_at, containers_total, containers_running, containers_unhealthy,
                                      cpu_percent, memory_percent, disk_percent, desired_sequence, versions_digest)
  SELECT * FROM unnest($4::text[], $5::timestamptz[], $6::int4[], $7::int4[], $8::int4[], $9::float4[], $10::float4[], $11::float4[], $12::int8[], $13::text[])`

/** SQLSTATE classes 22 (data exception) and 23 (integrity): one row's content, not the database, is at fault. */
function isDataError(err: unknown): boolean {
  const code = (err as {code?: unknown} | null)?.code
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code)
}

const ingesters = new WeakMap<Db, HeartbeatIngester>()

/**
 * Heartbeats from the whole fleet, micro-batched: each request is queued and flushed with others in
 * one multi-row upsert when the batch is full or its first heartbeat has waited maxWaitMs, and is
 * answered only once its batch has committed (a 200 means stored). A failed flush fails exactly its
 * own requests; a row the database refuses (bad content) is found by splitting the batch, so one
 * node's heartbeat never fails another's.
 */
export class HeartbeatIngester {
  private queue: Pending[] = []
  private timer: NodeJS.Timeout | undefined
  private inFlight = 0
  private readonly running = new Set<Promise<void>>()
  private closed = false
  private readonly maxBatch: number
  private readonly maxWaitMs: number
  private readonly maxInFlight: number
  private readonly maxQueued: number
  private readonly onStored: ((nodeIds: string[]) => void) | undefined
  /** Statements sent and heartbeats stored (for tests and metrics). */
  readonly stats = {flushes: 0, stored: 0, failed: 0}

  constructor(
    private readonly db: Db,
    opts: HeartbeatIngestOptions = {},
  ) {
    this.maxBatch = Math.max(1, opts.maxBatch ?? 200)
    this.maxWaitMs = Math.max(0, opts.maxWaitMs ?? 10)
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? (db.kind === 'pglite' ? 1 : 4))
    this.maxQueued = Math.max(this.maxBatch, opts.maxQueued ?? 20_000)
    this.onStored = opts.onStored
  }

  /**
   * The ingester of a database handle, made on first use: every FleetService on one Db shares its
   * batches. HQ's server makes it first (with its options) and closes it before the database.
   */
  static of(db: Db, opts?: HeartbeatIngestOptions): HeartbeatIngester {
    let i = ingesters.get(db)
    if (!i || i.closed) ingesters.set(db, (i = new HeartbeatIngester(db, opts)))
    return i
  }

  /** Resolves once the heartbeat (received at HQ's `receivedAt`) is committed with its batch. */
  submit(nodeId: string, receivedAt: Date, hb: Heartbeat): Promise<void> {
    if (this.closed) return Promise.reject(new JilError('HQ_CLOSING', 'HQ is shutting down', {status: 503, hint: 'the node retries with its next heartbeat'}))
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(new JilError('HEARTBEAT_BUSY', `HQ has ${this.queue.length} heartbeats waiting to be stored`, {status: 503, hint: 'the node retries with its next heartbeat; if this persists, see the database'}))
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({nodeId, receivedAt, hb, queuedAt: performance.now(), resolve, reject})
      this.pump()
    })
  }

  /** Heartbeats queued, not yet in a flush. */
  get queued(): number {
    return this.queue.length
  }

  /** Refuses new heartbeats, flushes the queued ones and waits for every flush in flight. */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
    while (this.queue.length > 0 || this.running.size > 0) {
      this.pump(true)
      await Promise.race(this.running)
    }
  }

  /** Starts the flushes that are due: full batches, or the head of the queue has waited long enough. */
  private pump(force = false): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const due = force || this.queue.length >= this.maxBatch || performance.now() - this.queue[0]!.queuedAt >= this.maxWaitMs
      if (!due) break
      this.start(this.queue.splice(0, this.maxBatch))
    }
    if (this.queue.length === 0 || this.inFlight >= this.maxInFlight) {
      // A flush finishing pumps again; no timer needed until then.
      clearTimeout(this.timer)
      this.timer = undefined
    } else if (!this.timer) {
      const wait = Math.max(0, this.maxWaitMs - (performance.now() - this.queue[0]!.queuedAt))
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.pump()
      }, wait)
    }
  }

  private start(batch: Pending[]): void {
    this.inFlight++
    const p = this.flush(batch).finally(() => {
      this.inFlight--
      this.running.delete(p)
      this.pump()
    })
    this.running.add(p)
  }

  /** Never rejects: every request of the batch is settled here. */
  private async flush(batch: Pending[]): Promise<void> {
    try {
      await this.write(batch)
      this.onStored?.(batch.map((r) => r.nodeId))
      this.stats.stored += batch.length
      for (const r of batch) r.resolve()
    } catch (err) {
      if (isDataError(err) && batch.length > 1) {
        const half = Math.ceil(batch.length / 2)
        await this.flush(batch.slice(0, half))
        await this.flush(batch.slice(half))
        return
      }
      this.stats.failed += batch.length
      const e =
        isDataError(err)
          ? new JilError('HEARTBEAT_REFUSED', 'HQ\'s database refused this heartbeat\'s content', {status: 400, hint: 'check the values the node reports', cause: err})
          : new JilError('HEARTBEAT_NOT_STORED', 'HQ could not store the heartbeat', {status: 503, hint: 'the node retries with its next heartbeat; if this persists, check HQ\'s database', cause: err})
      for (const r of batch) r.reject(e)
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    // The latest heartbeat of each node in this batch (queue order is arrival order).
    const latest = new Map<string, Pending>()
    for (const r of batch) latest.set(r.nodeId, r)
    const l = [...latest.values()].sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0)) // one lock order: concurrent flushes never deadlock
    const cols = {ids: [] as string[], at: [] as string[], total: [] as number[], running: [] as number[], unhealthy: [] as number[], cpu: [] as number[], mem: [] as number[], disk: [] as number[], seq: [] as number[], digest: [] as string[]}
    for (const r of batch) {
      const s = historySummary(r.hb)
      cols.ids.push(r.nodeId)
      cols.at.push(r.receivedAt.toISOString())
      cols.total.push(s.containers_total)
      cols.running.push(s.containers_running)
      cols.unhealthy.push(s.containers_unhealthy)
      cols.cpu.push(s.cpu_percent)
      cols.mem.push(s.memory_percent)
      cols.disk.push(s.disk_percent)
      cols.seq.push(s.desired_sequence)
      cols.digest.push(s.versions_digest)
    }
    this.stats.flushes++
    await this.db.query(FLUSH_SQL, [
      l.map((r) => r.nodeId),
      l.map((r) => r.receivedAt.toISOString()),
      l.map((r) => JSON.stringify(r.hb)),
      cols.ids,
      cols.at,
      cols.total,
      cols.running,
      cols.unhealthy,
      cols.cpu,
      cols.mem,
      cols.disk,
      cols.seq,
      cols.digest,
    ])
  }
}

export type HeartbeatRetentionOptions = {
  /** How long history is kept (default 24 h). */
  retentionMs?: number
  /** How often the loop prunes (default 5 min). */
  everyMs?: number
  /** Rows per DELETE: short statements, so ingest never waits long behind the pruning (default 5,000). */
  batch?: number
  onError?: (err: unknown) => void
}

/**
 * Prunes heartbeat history older than the retention period, in batched deletes, under an advisory
 * lock so one replica prunes at a time. One owned, single-flight loop: a tick that finds a run in
 * flight joins it instead of starting another; stop() waits for the run in flight.
 */
export class HeartbeatRetention {
  private readonly loop: PassLoop<number>
  readonly retentionMs: number

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly opts: HeartbeatRetentionOptions = {},
  ) {
    this.retentionMs = opts.retentionMs ?? 24 * 3_600_000
    this.loop = new PassLoop(() => this.run(), {everyMs: opts.everyMs ?? 5 * 60_000, overlap: 'join', ...(opts.onError ? {onError: opts.onError} : {})})
  }

  start(): void {
    this.loop.start()
  }

  /** Deletes what is older than the retention period; returns the rows deleted (0 when another replica holds the lock). */
  prune(): Promise<number> {
    return this.loop.tick()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  private async run(): Promise<number> {
    const lock = await this.db.tryAdvisoryLock(LOCKS.heartbeatRetention)
    if (!lock) return 0
    try {
      const cutoff = new Date(this.clock.now().getTime() - this.retentionMs)
      const batch = this.opts.batch ?? 5000
      let total = 0
      while (!this.loop.stopped) {
        const {rowCount} = await lock.session.query(
          `DELETE FROM node_heartbeat_history WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM node_heartbeat_history WHERE received_at < $1 ORDER BY received_at LIMIT $2))`,
          [cutoff, batch],
        )
        total += rowCount
        if (rowCount < batch) break
      }
      return total
    } finally {
      await lock.release()
    }
  }
}
