import {createHash, randomUUID} from 'node:crypto'

import type {Client, Pool, PoolClient} from 'pg'

import {LOCKS} from '../../shared/db/types.js'
import {JilError, messageOf} from '../../shared/errors.js'
import {partitionFor, type ConsumedBatch, type ConsumeOptions, type Consumer, type PartitionOffset, type ProduceRecord, type TopicPartition, type TopicSpec, type Transport} from '../transport.js'

/**
 * The postgres-log transport: a partitioned, append-only log in a PostgreSQL database that several
 * processes share (`jil dev`, the multi-process tests, a small single-site deployment). Topics have
 * partitions; a record's offset is allocated under its partition row's lock, so offsets become
 * visible in order and a reader that saw offset n never later finds a smaller one. Consumer groups
 * are member rows with heartbeats: live members split the partitions round-robin, and a member
 * reads a partition only while it holds that partition's advisory lock (released at once if its
 * process dies), so two members never read one partition at the same time. The offsets a group
 * reached are stored too (for monitoring); where a member starts is the caller's answer.
 * LISTEN/NOTIFY wakes idle consumers; a poll every second covers a lost notification.
 */

const CHANNEL = 'jil_log'

const SCHEMA_SQL = `
CREATE SCHEMA IF NOT EXISTS jil_log;
CREATE TABLE IF NOT EXISTS jil_log.topics (
  name text PRIMARY KEY,
  partitions integer NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS jil_log.partitions (
  topic text NOT NULL REFERENCES jil_log.topics (name) ON DELETE CASCADE,
  partition integer NOT NULL,
  next_offset bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS jil_log.records (
  topic text NOT NULL,
  partition integer NOT NULL,
  "offset" bigint NOT NULL,
  key text NOT NULL,
  value bytea NOT NULL,
  id text,
  ts timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (topic, partition, "offset")
);
CREATE UNIQUE INDEX IF NOT EXISTS records_id ON jil_log.records (topic, partition, id) WHERE id IS NOT NULL;
CREATE TABLE IF NOT EXISTS jil_log.members (
  grp text NOT NULL,
  member_id text NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  PRIMARY KEY (grp, member_id)
);
CREATE TABLE IF NOT EXISTS jil_log.group_offsets (
  grp text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  next_offset bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (grp, topic, partition)
);`

export type PostgresLogOptions = {
  /** How often a consumer renews its membership and checks the assignment (default 1 s). */
  heartbeatMs?: number
  /** A member silent this long is dropped from its group (default 10 s). */
  sessionTimeoutMs?: number
  /** Longest an idle consumer waits without a notification (default 1 s). */
  pollMs?: number
  applicationName?: string
}

export async function openPostgresLog(url: string, o: PostgresLogOptions = {}): Promise<Transport> {
  const pg = (await import('pg')).default
  const types = {
    getTypeParser(oid: number, format?: 'text' | 'binary') {
      if (oid === 20) return (v: string) => Number(v)
      return pg.types.getTypeParser(oid, format as 'text')
    },
  }
  const config = {connectionString: url, application_name: o.applicationName ?? 'jil-sync-log', connectionTimeoutMillis: 10_000, types}
  const pool = new pg.Pool({...config, max: 6})
  // An idle client losing its server must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  const t = new PostgresLog(pool, () => new pg.Client(config), o)
  try {
    await t.init()
  } catch (err) {
    await pool.end().catch(() => {})
    throw logError('open the sync log', err)
  }
  return t
}

function logError(what: string, err: unknown): JilError {
  if (err instanceof JilError) return err
  return new JilError('SYNC_BUS_UNAVAILABLE', `could not ${what}: ${messageOf(err)}`, {hint: 'check JIL_SYNC_LOG_URL and that its PostgreSQL server runs', status: 503, cause: err})
}

/** The advisory-lock key of one group's partition (64 bits of its SHA-256). */
function partitionLockKey(group: string, topic: string, partition: number): string {
  return createHash('sha256').update(`jil_log\0${group}\0${topic}\0${partition}`).digest().readBigInt64BE(0).toString()
}

const tpKey = (tp: TopicPartition) => `${tp.topic}\0${tp.partition}`

class PostgresLog implements Transport {
  readonly kind = 'postgres-log' as const
  private readonly partitionCounts = new Map<string, number>()
  private listener: Client | undefined
  private listening: Promise<Client | undefined> | undefined
  private readonly waiters = new Set<{topics: ReadonlySet<string>; wake: () => void}>()
  private closed = false

  constructor(
    private readonly pool: Pool,
    private readonly newClient: () => Client,
    private readonly o: PostgresLogOptions,
  ) {}

  async init(): Promise<void> {
    await this.tx(async (c) => {
      // Concurrent first starts would race on CREATE … IF NOT EXISTS: one at a time.
      await c.query('SELECT pg_advisory_xact_lock($1::bigint)', [LOCKS.syncLogSchema.toString()])
      await c.query(SCHEMA_SQL)
    })
  }

  private async tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect()
    let broken = false
    try {
      await c.query('BEGIN')
      const r = await fn(c)
      await c.query('COMMIT')
      return r
    } catch (err) {
      await c.query('ROLLBACK').catch(() => (broken = true))
      throw err
    } finally {
      c.release(broken)
    }
  }

  async ensureTopics(topics: readonly TopicSpec[]): Promise<void> {
    await this.tx(async (c) => {
      for (const t of topics) {
        await c.query('INSERT INTO jil_log.topics (name, partitions) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [t.name, t.partitions])
        const {rows} = await c.query<{partitions: number}>('SELECT partitions FROM jil_log.topics WHERE name = $1', [t.name])
        await c.query('INSERT INTO jil_log.partitions (topic, partition) SELECT $1, p FROM generate_series(0, $2::int - 1) p ON CONFLICT DO NOTHING', [t.name, rows[0]!.partitions])
      }
    })
  }

  private async partitionsOf(topic: string): Promise<number> {
    let n = this.partitionCounts.get(topic)
    if (n === undefined) {
      const {rows} = await this.pool.query<{partitions: number}>('SELECT partitions FROM jil_log.topics WHERE name = $1', [topic])
      if (!rows[0]) throw new JilError('SYNC_TOPIC_UNKNOWN', `the sync log has no topic ${topic}`, {hint: 'topics are created by the node at sync start (ensureTopics)', status: 500})
      n = rows[0].partitions
      this.partitionCounts.set(topic, n)
    }
    return n
  }

  async produce(records: readonly ProduceRecord[]): Promise<void> {
    if (records.length === 0) return
    const groups = new Map<string, {topic: string; partition: number; records: ProduceRecord[]}>()
    for (const r of records) {
      const partition = partitionFor(r.key, await this.partitionsOf(r.topic))
      const k = tpKey({topic: r.topic, partition})
      let g = groups.get(k)
      if (!g) groups.set(k, (g = {topic: r.topic, partition, records: []}))
      g.records.push(r)
    }
    // Partition locks taken in one order everywhere: two producers never deadlock.
    const ordered = [...groups.values()].sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition))
    try {
      await this.tx(async (c) => {
        const touched = new Set<string>()
        for (const g of ordered) {
          const {rows} = await c.query<{next_offset: number}>('SELECT next_offset FROM jil_log.partitions WHERE topic = $1 AND partition = $2 FOR UPDATE', [g.topic, g.partition])
          if (!rows[0]) throw new JilError('SYNC_TOPIC_UNKNOWN', `the sync log has no partition ${g.partition} of ${g.topic}`, {status: 500})
          // Idempotence by id, checked under the partition lock (one id has one key, so one partition).
          const ids = g.records.map((r) => r.id).filter((x): x is string => x !== undefined)
          const seen = new Set<string>()
          if (ids.length) {
            const dup = await c.query<{id: string}>('SELECT id FROM jil_log.records WHERE topic = $1 AND partition = $2 AND id = ANY($3::text[])', [g.topic, g.partition, ids])
            for (const d of dup.rows) seen.add(d.id)
          }
          const fresh = g.records.filter((r) => {
            if (r.id === undefined) return true
            if (seen.has(r.id)) return false
            seen.add(r.id)
            return true
          })
          if (fresh.length === 0) continue
          const first = rows[0].next_offset
          await c.query(
            `INSERT INTO jil_log.records (topic, partition, "offset", key, value, id)
             SELECT $1, $2, $3::bigint + o - 1, k, v, i FROM unnest($4::text[], $5::bytea[], $6::text[]) WITH ORDINALITY AS x(k, v, i, o)`,
            [g.topic, g.partition, first, fresh.map((r) => r.key), fresh.map((r) => r.value), fresh.map((r) => r.id ?? null)],
          )
          await c.query('UPDATE jil_log.partitions SET next_offset = $3 WHERE topic = $1 AND partition = $2', [g.topic, g.partition, first + fresh.length])
          touched.add(g.topic)
        }
        for (const topic of touched) await c.query('SELECT pg_notify($1, $2)', [CHANNEL, topic])
      })
    } catch (err) {
      throw logError('write to the sync log', err)
    }
  }

  async endOffsets(topics: readonly string[]): Promise<PartitionOffset[]> {
    try {
      const {rows} = await this.pool.query<{topic: string; partition: number; next_offset: number}>(
        'SELECT topic, partition, next_offset FROM jil_log.partitions WHERE topic = ANY($1::text[]) ORDER BY topic, partition',
        [[...topics]],
      )
      return rows.map((r) => ({topic: r.topic, partition: r.partition, offset: r.next_offset}))
    } catch (err) {
      throw logError('read the sync log', err)
    }
  }

  /** One LISTEN connection per transport; consumers that wait register here. Lost: re-made on the next wait. */
  private ensureListener(): Promise<Client | undefined> {
    if (this.listener) return Promise.resolve(this.listener)
    this.listening ??= (async () => {
      const c = this.newClient()
      c.on('error', () => {
        if (this.listener === c) this.listener = undefined
        c.end().catch(() => {})
      })
      c.on('notification', (n) => {
        for (const w of this.waiters) if (n.payload && w.topics.has(n.payload)) w.wake()
      })
      try {
        await c.connect()
        await c.query(`LISTEN ${CHANNEL}`)
        if (this.closed) {
          await c.end().catch(() => {})
          return undefined
        }
        this.listener = c
        return c
      } catch {
        await c.end().catch(() => {})
        return undefined
      } finally {
        this.listening = undefined
      }
    })()
    return this.listening
  }

  /** Resolves on a notification for one of `topics`, a wake(), or after `ms`. */
  private waitFor(topics: ReadonlySet<string>, ms: number, abort: {wake?: () => void}): Promise<void> {
    return new Promise((resolve) => {
      const w = {
        topics,
        wake: () => {
          clearTimeout(timer)
          this.waiters.delete(w)
          abort.wake = undefined
          resolve()
        },
      }
      const timer = setTimeout(w.wake, ms)
      this.waiters.add(w)
      abort.wake = w.wake
    })
  }

  async consume(o: ConsumeOptions): Promise<Consumer> {
    const heartbeatMs = this.o.heartbeatMs ?? 1000
    const sessionS = (this.o.sessionTimeoutMs ?? 10_000) / 1000
    const pollMs = this.o.pollMs ?? 1000
    const maxBatch = o.maxBatch ?? 1000
    const memberId = randomUUID()
    const topics = new Set(o.topics)
    // Advisory locks belong to a session: one pinned connection holds this member's partitions.
    const session = this.newClient()
    session.on('error', () => {})
    await session.connect()
    await this.ensureListener()

    type Held = {tp: TopicPartition; next: number}
    const held = new Map<string, Held>()
    let stopped = false
    const waker: {wake?: () => void} = {}

    const rebalance = async (): Promise<void> => {
      await session.query(
        `INSERT INTO jil_log.members (grp, member_id, heartbeat_at) VALUES ($1, $2, clock_timestamp())
         ON CONFLICT (grp, member_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at`,
        [o.group, memberId],
      )
      await session.query(`DELETE FROM jil_log.members WHERE grp = $1 AND heartbeat_at < clock_timestamp() - make_interval(secs => $2)`, [o.group, sessionS])
      const members = (await session.query<{member_id: string}>('SELECT member_id FROM jil_log.members WHERE grp = $1 ORDER BY member_id', [o.group])).rows.map((r) => r.member_id)
      const parts = (
        await session.query<{topic: string; partition: number}>('SELECT topic, partition FROM jil_log.partitions WHERE topic = ANY($1::text[]) ORDER BY topic, partition', [[...topics]])
      ).rows
      const me = Math.max(0, members.indexOf(memberId))
      const want = new Map(parts.filter((_, i) => i % Math.max(1, members.length) === me).map((p) => [tpKey(p), p]))
      let changed = false
      for (const [k, h] of held) {
        if (want.has(k)) continue
        await session.query('SELECT pg_advisory_unlock($1::bigint)', [partitionLockKey(o.group, h.tp.topic, h.tp.partition)])
        held.delete(k)
        changed = true
      }
      const gained: TopicPartition[] = []
      for (const [k, tp] of want) {
        if (held.has(k)) continue
        // Still held by the member it was taken from (it lets go on its next heartbeat): try again then.
        const {rows} = await session.query<{ok: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [partitionLockKey(o.group, tp.topic, tp.partition)])
        if (!rows[0]!.ok) continue
        gained.push({topic: tp.topic, partition: tp.partition})
      }
      if (gained.length) {
        const positions = await o.position(gained)
        for (const tp of gained) {
          const p = positions.find((x) => x.topic === tp.topic && x.partition === tp.partition)
          held.set(tpKey(tp), {tp, next: Math.max(0, p?.offset ?? 0)})
        }
        changed = true
      }
      if (changed) o.onAssignment?.([...held.values()].map((h) => h.tp))
    }

    // The batch read ahead: of the partition whose turn is next, from where it stood when read.
    let ahead: {h: Held; from: number; batch: Promise<ConsumedBatch | undefined>} | undefined
    const readAhead = (h: Held, from: number): void => {
      const batch = this.read(h.tp, from, maxBatch)
      // Handed over as soon as it is read, while the handler still works on the batch before it.
      // A failed read is not an error here: the turn reads again.
      batch.then((b) => b && o.onFetched?.(b)).catch(() => {})
      const retried = batch.catch(() => this.read(h.tp, from, maxBatch))
      // Awaited only if its partition's turn comes: a failure with nobody waiting must not end the process.
      retried.catch(() => {})
      ahead = {h, from, batch: retried}
    }
    // Where the next turn starts: after the partition handled last, so that a turn cut short by the
    // heartbeat goes on with the partition whose batch was read ahead, and none waits behind the others.
    let cursor = 0

    const loop = async (): Promise<void> => {
      let nextHeartbeat = 0
      while (!stopped) {
        if (Date.now() >= nextHeartbeat) {
          await rebalance()
          nextHeartbeat = Date.now() + heartbeatMs
        }
        let got = false
        const turn = [...held.values()]
        const first = turn.length ? cursor % turn.length : 0
        for (let j = 0; j < turn.length; j++) {
          if (stopped) break
          const i = (first + j) % turn.length
          const h = turn[i]!
          // Records are immutable once written: a batch read ahead is still right, if perhaps shorter.
          // Found empty then, the partition is read again (records may have come since).
          const early = ahead && ahead.h === h && ahead.from === h.next ? await ahead.batch : undefined
          ahead = undefined
          const batch = early ?? (await this.read(h.tp, h.next, maxBatch))
          if (!batch) continue
          got = true
          const last = batch.records.at(-1)!.offset
          // One batch per partition per turn (a backlog on one does not hold the others back); the
          // next partition's batch is read while this one is handled — this one's own next batch
          // when it is alone and more is likely there (the batch was full).
          const following = turn[(i + 1) % turn.length]!
          if (following !== h) readAhead(following, following.next)
          else if (batch.records.length === maxBatch) readAhead(h, last + 1)
          await o.onBatch(batch)
          h.next = last + 1
          await this.pool.query(
            `INSERT INTO jil_log.group_offsets (grp, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
            [o.group, h.tp.topic, h.tp.partition, h.next],
          )
          cursor = i + 1
          if (Date.now() >= nextHeartbeat) break
        }
        if (!got && !stopped) {
          await this.ensureListener()
          await this.waitFor(topics, Math.max(10, Math.min(pollMs, nextHeartbeat - Date.now())), waker)
        }
      }
    }

    const leave = async (): Promise<void> => {
      await session.query('DELETE FROM jil_log.members WHERE grp = $1 AND member_id = $2', [o.group, memberId]).catch(() => {})
      // Closing the session releases every advisory lock it held.
      await session.end().catch(() => {})
      held.clear()
    }

    const done = loop().then(leave, async (err: unknown) => {
      await leave()
      throw err instanceof JilError ? err : logError('consume the sync log', err)
    })
    done.catch(() => {})
    return {
      assignment: () => [...held.values()].map((h) => h.tp),
      stop: async () => {
        stopped = true
        waker.wake?.()
        await done.catch(() => {})
      },
      done,
    }
  }

  /** Up to `max` records of a partition from offset `from` on, as a batch; undefined when there are none. */
  private async read(tp: TopicPartition, from: number, max: number): Promise<ConsumedBatch | undefined> {
    const {rows} = await this.pool.query<{offset: number; key: string; value: Buffer; ts: Date}>(
      'SELECT "offset", key, value, ts FROM jil_log.records WHERE topic = $1 AND partition = $2 AND "offset" >= $3 ORDER BY "offset" LIMIT $4',
      [tp.topic, tp.partition, from, max],
    )
    if (rows.length === 0) return undefined
    return {topic: tp.topic, partition: tp.partition, records: rows.map((r) => ({offset: r.offset, key: r.key, value: r.value, timestamp: r.ts}))}
  }

  async close(): Promise<void> {
    this.closed = true
    for (const w of this.waiters) w.wake()
    const l = this.listener ?? (await this.listening)
    this.listener = undefined
    await l?.end().catch(() => {})
    await this.pool.end().catch(() => {})
  }
}
