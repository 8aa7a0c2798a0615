import {join} from 'node:path'

import type {Client} from 'pg'
import type {Logger} from 'pino'

import type {Clock} from '../shared/clock.js'
import {JilError, messageOf} from '../shared/errors.js'
import {Pause, withinMs} from '../shared/loop.js'
import {writeFileAtomic} from '../shared/files.js'
import {openPg} from '../shared/db/pg.js'
import type {Db} from '../shared/db/types.js'
import {Applier, pruneApplied, type ApplyResult} from './applier.js'
import type {SyncSettings} from './config.js'
import {STATE_FILES} from '../node/state.js'
import {migrateNodeDb} from './migrations.js'
import {Relay} from './relay.js'
import {readSyncStatus, type SyncStatus} from './status.js'
import {encodeEnvelope, SYNC_SCHEMA_VERSION, TOPICS, uuidv7, type SyncEnvelope} from '../shared/sync-envelope.js'
import type {Consumer, Transport} from './transport.js'
import {openTransport, type KafkaIdentity} from './transports/index.js'

/**
 * Event sync on a node, as the daemon (or `jil node sync run`) runs it: the node database migrated
 * and marked with this node as the source, then a session of relay (outbox → bus) and applier
 * (bus → declared tables) that is torn down and started again, with backoff, whenever the bus or a
 * database fails, so an outage only delays: the outbox holds what was not sent, the stored offsets
 * say what was not applied. A status loop keeps the lag, the backlog and caught-up current for
 * /healthz, /metrics and the heartbeat (the state dir's sync-status.json).
 */

export const SYNC_STATUS_FILE = STATE_FILES.syncStatus

/** Outbox rows per relay round at most: one produce call, kept well under a broker's ~1 MB record-batch limit. */
const RELAY_ROUND = 1000

export type SyncRunnerOptions = {
  settings: SyncSettings
  nodeId: string
  clock: Clock
  log: Logger
  /** Where sync-status.json goes (the health agent reads it for the heartbeat). */
  stateDir?: string
  /** The node's mTLS identity for the brokers (kafka). */
  identity?: () => Promise<KafkaIdentity>
  /** Tests: a transport of their own (not closed by the runner). */
  transport?: Transport
  /** Test hook: inside each apply transaction, before COMMIT. */
  beforeCommit?: () => void | Promise<void>
  statusEveryMs?: number
  relayPollMs?: number
  /** How often de-duplication rows below the sources' watermarks are pruned (default 5 min). */
  pruneEveryMs?: number
  /** How long such rows are kept first (default 1 h). */
  dedupeRetentionMs?: number
  /** How long a status publish may take before it counts as failed (default 5 s). */
  statusPublishTimeoutMs?: number
}

export type SyncCounters = {
  batches: number
  applied: number
  duplicates: number
  own: number
  ignored: number
  changed: number
  published: number
  restarts: number
  /** De-duplication rows removed (their events are known by their source's watermark). */
  pruned: number
  /** Heartbeats published on jil.fleet.status, and those that were not (no bus, or it failed). */
  status_published: number
  status_dropped: number
}

/** What became of one heartbeat offered to the bus. */
export type StatusPublish = {published: true} | {published: false; reason: string}

export type SyncSnapshot = {
  caught_up: boolean
  lag_s: number
  outbox_backlog: number
  /** Open gaps (sequences not seen) across sources. */
  gaps: number
  counters: SyncCounters
  /** The last failure of the bus session, while it has not recovered. */
  error?: string
  status?: SyncStatus
}

export type SyncRunner = {
  /** The latest status (refreshed every statusEveryMs). */
  snapshot(): SyncSnapshot
  /** Recomputes the status now. */
  refresh(): Promise<SyncSnapshot>
  /**
   * Publishes the node's heartbeat on jil.fleet.status, best effort: while the bus session is down,
   * or when the bus does not take it in time, it is dropped (a heartbeat is news, not state; the next
   * one supersedes it) and counted.
   */
  publishStatus(heartbeat: unknown): Promise<StatusPublish>
  stop(): Promise<void>
}

export async function startSync(o: SyncRunnerOptions): Promise<SyncRunner> {
  const log = o.log.child({sync: o.settings.transport})
  const since = o.clock.now()
  // Opened (and migrated) by the supervisor, so a database that is down at start is retried like any outage.
  let db: Db | undefined
  const counters: SyncCounters = {batches: 0, applied: 0, duplicates: 0, own: 0, ignored: 0, changed: 0, published: 0, restarts: 0, pruned: 0, status_published: 0, status_dropped: 0}
  let snap: SyncSnapshot = {caught_up: false, lag_s: 0, outbox_backlog: 0, gaps: 0, counters}
  let stopped = false
  let transport: Transport | undefined
  let error: string | undefined
  const topics = o.settings.tables.map((t) => `jil.state.sync.${t.name}`)
  const relayPause = new Pause()
  const statusPause = new Pause()
  const sessionPause = new Pause()
  const prunePause = new Pause()
  // The status topic is created once per bus session (a new session may be a new bus).
  let statusTopicReady: Promise<void> | undefined

  const refresh = async (): Promise<SyncSnapshot> => {
    try {
      if (!db) {
        snap = {...snap, caught_up: false, counters, error: error ?? 'the node database is not open yet'}
      } else if (transport && !error) {
        const status = await readSyncStatus({db, transport, topics, nodeId: o.nodeId, clock: o.clock, since})
        snap = {caught_up: status.caught_up, lag_s: status.lag_s, outbox_backlog: status.outbox_backlog, gaps: status.gaps.reduce((s, g) => s + g.missing, 0), counters, status}
      } else {
        // The bus is away: what can still be known is the backlog growing.
        const {rows} = await db.query<{n: number}>('SELECT count(*)::bigint AS n FROM jil_outbox WHERE sent_at IS NULL')
        const lag = Math.round((o.clock.now().getTime() - since.getTime()) / 100) / 10
        snap = {caught_up: false, lag_s: snap.status?.lag_s ?? lag, outbox_backlog: rows[0]!.n, gaps: snap.gaps, counters, ...(error ? {error} : {})}
      }
    } catch (err) {
      snap = {...snap, caught_up: false, counters, error: messageOf(err)}
    }
    if (o.stateDir) await writeFileAtomic(join(o.stateDir, SYNC_STATUS_FILE), JSON.stringify({...snap, written_at: o.clock.now().toISOString()}, null, 2) + '\n').catch(() => {})
    return snap
  }

  const statusLoop = (async () => {
    while (!stopped) {
      await refresh()
      await statusPause.sleep(o.statusEveryMs ?? 2000)
    }
  })()

  // Bounds the de-duplication table: rows below every source's watermark are redundant. A failure
  // (the database away) only waits for the next round.
  const pruneLoop = (async () => {
    while (!stopped) {
      await prunePause.sleep(o.pruneEveryMs ?? 300_000)
      if (stopped || !db) continue
      try {
        const r = await pruneApplied(db, {now: o.clock.now(), retentionMs: o.dedupeRetentionMs ?? 3_600_000})
        counters.pruned += r.pruned
        if (r.pruned) log.debug({pruned: r.pruned}, 'de-duplication rows pruned')
      } catch (err) {
        log.warn({err: messageOf(err)}, 'pruning de-duplication rows failed; next round will retry')
      }
    }
  })()

  const publishStatus = async (heartbeat: unknown): Promise<StatusPublish> => {
    const t = transport
    const d = db
    if (!t || !d || error) {
      counters.status_dropped++
      return {published: false, reason: error ? `the bus is unreachable (${error})` : 'the bus session is not up yet'}
    }
    const timeoutMs = o.statusPublishTimeoutMs ?? 5000
    const send = (async () => {
      const ready = (statusTopicReady ??= t.ensureTopics([{name: TOPICS.fleetStatus, partitions: o.settings.partitions}]))
      await ready.catch((err: unknown) => {
        statusTopicReady = undefined
        throw err
      })
      const {rows} = await d.query<{source_id: string; status_seq: number}>('UPDATE jil_sync_node SET status_seq = status_seq + 1 RETURNING source_id, status_seq')
      const now = o.clock.now()
      const env: SyncEnvelope = {
        event_id: uuidv7(now.getTime()),
        source_id: rows[0]!.source_id,
        topic: TOPICS.fleetStatus,
        ts: now.toISOString(),
        seq: rows[0]!.status_seq,
        schema: SYNC_SCHEMA_VERSION,
        key: o.nodeId,
        payload: heartbeat,
      }
      await t.produce([{topic: TOPICS.fleetStatus, key: o.nodeId, value: encodeEnvelope(env), id: env.event_id}])
    })()
    try {
      await withinMs(send, timeoutMs, 'the bus')
      counters.status_published++
      return {published: true}
    } catch (err) {
      counters.status_dropped++
      return {published: false, reason: messageOf(err)}
    }
  }

  /** One bus session: runs until stop (resolves) or a failure (rejects). */
  const session = async (db: Db): Promise<void> => {
    const own = !o.transport
    const t = o.transport ?? (await openTransport(o.settings, o.identity))
    let consumer: Consumer | undefined
    let listener: Client | undefined
    try {
      const applier = new Applier({db, sourceId: o.nodeId, tables: o.settings.tables, log, ...(o.beforeCommit ? {beforeCommit: o.beforeCommit} : {})})
      await applier.init()
      await t.ensureTopics(applier.topics.map((name) => ({name, partitions: o.settings.partitions})))
      const relay = new Relay({db, transport: t, clock: o.clock, batch: Math.min(o.settings.batch, RELAY_ROUND), partitions: o.settings.partitions})
      relay.markEnsured(applier.topics)
      transport = t
      consumer = await t.consume({
        group: `jil-node-${o.nodeId}`,
        topics: applier.topics,
        maxBatch: o.settings.batch,
        position: (assigned) => applier.position(assigned),
        onFetched: (b) => applier.prefetch(b),
        onBatch: async (b) => {
          const r: ApplyResult = await applier.apply(b)
          counters.batches++
          counters.applied += r.applied
          counters.duplicates += r.duplicates
          counters.own += r.own
          counters.ignored += r.ignored
          counters.changed += r.changed
        },
      })
      // Services' commits NOTIFY jil_outbox: the relay wakes at once instead of waiting for its poll.
      listener = await listen(o.settings.nodeDatabaseUrl, () => relayPause.wake())
      error = undefined
      statusPause.wake()
      const relayLoop = (async () => {
        while (!stopped) {
          const r = await relay.drain()
          counters.published += r.published
          await relayPause.sleep(o.relayPollMs ?? 1000)
        }
      })()
      await Promise.race([relayLoop, consumer.done])
    } finally {
      transport = undefined
      statusTopicReady = undefined
      await consumer?.stop().catch(() => {})
      await listener?.end().catch(() => {})
      if (own) await t.close().catch(() => {})
    }
  }

  const supervisor = (async () => {
    let backoff = 1000
    while (!stopped) {
      try {
        if (!db) {
          const opened = await openPg(o.settings.nodeDatabaseUrl, {max: 4, applicationName: 'jil-sync'})
          try {
            await migrateNodeDb(opened, o.nodeId)
          } catch (err) {
            await opened.close()
            throw err
          }
          db = opened
        }
        await session(db)
        backoff = 1000
      } catch (err) {
        if (stopped) break
        error = messageOf(err)
        counters.restarts++
        log.warn({err: error, code: err instanceof JilError ? err.code : undefined, retry_ms: backoff}, 'sync session failed; retrying')
        statusPause.wake()
        await sessionPause.sleep(backoff)
        backoff = Math.min(backoff * 2, 30_000)
      }
    }
  })()

  log.info({node: o.nodeId, tables: o.settings.tables.map((t) => t.name)}, 'sync started')
  let stopping: Promise<void> | undefined
  return {
    snapshot: () => snap,
    refresh,
    publishStatus,
    stop: () =>
      (stopping ??= (async () => {
        stopped = true
        relayPause.wake()
        statusPause.wake()
        sessionPause.wake()
        prunePause.wake()
        await supervisor
        await statusLoop
        await pruneLoop
        await db?.close()
        log.info('sync stopped')
      })()),
  }
}

async function listen(url: string, onNotify: () => void): Promise<Client> {
  const pg = (await import('pg')).default
  const c = new pg.Client({connectionString: url, application_name: 'jil-sync-listen'})
  // A lost LISTEN connection only costs promptness: the relay also polls.
  c.on('error', () => {})
  c.on('notification', onNotify)
  await c.connect()
  await c.query('LISTEN jil_outbox')
  return c
}
