import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {pino} from 'pino'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {runDaemon, type RunningDaemon} from '../../src/daemon/daemon.js'
import type {NodeHealth} from '../../src/daemon/healthz.js'
import {runAgent} from '../../src/node/agents/run.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import {readSyncHeartbeat} from '../../src/node/state.js'
import {systemClock} from '../../src/shared/clock.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {encodeEnvelope, parseEnvelope, rowKey, stateSyncTopic, TOPICS, uuidv7, type SyncEnvelope} from '../../src/shared/sync-envelope.js'
import type {Transport} from '../../src/sync/transport.js'
import {openPostgresLog} from '../../src/sync/transports/postgres-log.js'
import {startTestHq} from '../helpers/hq.js'
import {joinTestNode, testAgentContext, testSettings, type TestNode} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

/**
 * The daemon with sync on: a node replaying a backlog is not ready (/healthz 503, SYNC_CATCHING_UP)
 * until it has caught up, /metrics shows the sync gauges, and the heartbeat carries the sync block.
 */

const NODE = 'CH-SYNC-01'
const silent = pino({level: 'silent'})

describe.runIf(hasPg)('the daemon runs event sync: /healthz waits for catch-up', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let daemon: RunningDaemon | undefined
  let nodeDb: Awaited<ReturnType<typeof freshPgDatabase>>
  let logDb: Awaited<ReturnType<typeof freshPgDatabase>>
  let db: Db
  let bus: Transport
  let env: Record<string, string>

  beforeAll(async () => {
    ;[t, nodeDb, logDb] = await Promise.all([startTestHq(), freshPgDatabase(), freshPgDatabase()])
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE})
    db = await openPg(nodeDb.url, {max: 2})
    await db.exec('CREATE TABLE wallet_accounts (id text PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL)')
    bus = await openPostgresLog(logDb.url)
    // Another node's history is already on the bus: 3,000 changes to replay.
    const topic = stateSyncTopic('wallet_accounts')
    await bus.ensureTopics([{name: topic, partitions: 2}])
    for (let b = 0; b < 3; b++) {
      await bus.produce(
        [...Array(1000).keys()].map((i) => {
          const seq = b * 1000 + i + 1
          const key = `acct-${seq % 500}`
          const env = {event_id: uuidv7(), source_id: 'SG-SIN-01', topic, ts: '2026-01-01T00:00:00.000000Z', seq, schema: 1, key: rowKey([key]), payload: {table: 'wallet_accounts', op: 'upsert', key: [key], version: seq, row: {id: key, balance: seq, version: seq}}}
          return {topic, key: env.key, value: encodeEnvelope(env as never), id: env.event_id}
        }),
      )
    }
    env = {JIL_SYNC_TRANSPORT: 'postgres-log', JIL_NODE_DATABASE_URL: nodeDb.url, JIL_SYNC_LOG_URL: logDb.url, JIL_SYNC_TABLES: 'wallet_accounts', JIL_SYNC_PARTITIONS: '2', JIL_SYNC_BATCH: '100'}
  })
  afterAll(async () => {
    await daemon?.stop()
    await bus?.close()
    await db?.close()
    await node?.cleanup()
    await t?.stop()
    await nodeDb?.drop()
    await logDb?.drop()
  })

  it('answers 503 SYNC_CATCHING_UP while replaying, 200 once caught up; metrics and heartbeat say so', async () => {
    daemon = await runDaemon({stateDir: node.stateDir, settings: testSettings(node.stateDir, env), clock: systemClock, log: silent, version: '0.0.0-test', agents: [], healthzCacheMs: 0})
    const healthz = async (): Promise<{status: number; body: NodeHealth}> => {
      const r = await fetch(`${daemon!.ready.healthz}/healthz`)
      return {status: r.status, body: (await r.json()) as NodeHealth}
    }
    // At once: not caught up (nothing consumed yet), so not routable.
    const first = await healthz()
    expect(first.status).toBe(503)
    expect(first.body.reasons.map((r) => r.code)).toContain('SYNC_CATCHING_UP')
    expect(first.body.sync?.caught_up).toBe(false)

    const ok = await until('caught up', async () => {
      const h = await healthz()
      return h.status === 200 ? h : undefined
    }, 60_000)
    expect(ok.body.sync).toEqual({caught_up: true, lag_s: 0})
    const rows = await db.query<{n: number; max: number}>('SELECT count(*)::int AS n, max(version)::int AS max FROM wallet_accounts')
    expect(rows.rows[0]).toEqual({n: 500, max: 3000})

    const text = await (await fetch(`${daemon.ready.healthz}/metrics`)).text()
    expect(text).toMatch(/^jil_sync_caught_up\{node="CH-SYNC-01"\} 1$/m)
    expect(text).toMatch(/^jil_sync_outbox_backlog\{node="CH-SYNC-01"\} 0$/m)
    expect(text).toMatch(/^jil_sync_events\{outcome="applied",node="CH-SYNC-01"\} 3000$/m)

    // The heartbeat carries the runner's status (its file), and HQ accepts it.
    await until('status file', async () => (JSON.parse(await readFile(join(node.stateDir, 'sync-status.json'), 'utf8')).caught_up ? true : undefined), 10_000)
    expect(await readSyncHeartbeat(node.stateDir, new Date())).toEqual({caught_up: true, lag_s: 0, outbox_backlog: 0, gaps: 0})
    const ctx = await testAgentContext(node, {env})
    try {
      const report = await runAgent('health', ctx)
      expect(report.ok, report.summary).toBe(true)
      expect(report.summary).toMatch(/heartbeat sent/)
    } finally {
      await ctx.close()
    }
  })

  it("publishes the daemon's heartbeats on jil.fleet.status, numbered apart from state events", async () => {
    expect(daemon, 'the first test starts the daemon').toBeDefined()
    // A heartbeat is never applied as state: the applier's own topics stay as they were.
    const before = await db.query<{n: number}>('SELECT count(*)::int AS n FROM jil_sync_applied')
    for (let i = 0; i < 2; i++) expect(await daemon!.runNow('health')).toEqual({ran: true})
    const seen: SyncEnvelope[] = []
    const probe = await bus.consume({
      group: 'status-probe',
      topics: [TOPICS.fleetStatus],
      position: async (tps) => tps.map((tp) => ({...tp, offset: 0})),
      onBatch: async (b) => void seen.push(...b.records.map((r) => parseEnvelope(r.value))),
    })
    try {
      await until('two heartbeats on the bus', async () => (seen.length >= 2 ? true : undefined), 20_000)
    } finally {
      await probe.stop()
    }
    expect(seen.map((e) => [e.source_id, e.topic, e.key, e.seq])).toEqual([
      [NODE, 'jil.fleet.status', NODE, 1],
      [NODE, 'jil.fleet.status', NODE, 2],
    ])
    const hb = seen[1]!.payload as {node_id: string; sync?: {caught_up: boolean}; cert: {serial: string}}
    expect(hb.node_id).toBe(NODE)
    expect(hb.sync?.caught_up).toBe(true)
    expect(hb.cert.serial).toBe((await loadNodeIdentity(node.stateDir)).cert.serial)
    // The node's state sequence did not move (no outbox rows were written for the heartbeats).
    const {rows} = await db.query<{last_seq: number; status_seq: number}>('SELECT last_seq, status_seq FROM jil_sync_node')
    expect(rows[0]).toEqual({last_seq: 0, status_seq: 2})
    expect((await db.query<{n: number}>('SELECT count(*)::int AS n FROM jil_sync_applied')).rows[0]).toEqual(before.rows[0])
    const text = await (await fetch(`${daemon!.ready.healthz}/metrics`)).text()
    expect(text).toMatch(/^jil_sync_events\{outcome="status_published",node="CH-SYNC-01"\} 2$/m)
  })
})
