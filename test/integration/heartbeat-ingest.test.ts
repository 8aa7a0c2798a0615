import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {HeartbeatIngester, HeartbeatRetention} from '../../src/hq/fleet/heartbeats.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import type {Heartbeat} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import {LOCKS, type Db} from '../../src/shared/db/types.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {dbAdapters, type OpenedDb} from '../helpers/adapters.js'
import {startTestHq} from '../helpers/hq.js'
import {joinTestNode, userClient, type TestNode} from '../helpers/node.js'

const ZONES = ['CH/FINMA', 'SG/MAS', 'JP/JFSA']
const nodeId = (i: number) => `${ZONES[i % 3]!.slice(0, 2)}-HBINGEST-${String(i).padStart(2, '0')}`

function hb(id: string, o: Partial<Heartbeat> = {}): Heartbeat {
  return {
    node_id: id,
    time: new Date().toISOString(),
    agent_version: '0.0.0-test',
    run_mode: 'running',
    desired_sequence: 1,
    containers: {total: 2, running: 2, healthy: 1, unhealthy: 0, exited: 0, restarting: 0, other: 0},
    services: [{name: 'api', critical: true, state: 'running', health: 'healthy', digest: `sha256:${'a'.repeat(64)}`, version: 'v1.0'}],
    system: {cpu_percent: 12.5, load1: 0.4, memory_used_bytes: 2e9, memory_total_bytes: 8e9, disk_used_bytes: 40e9, disk_total_bytes: 100e9, disk_percent: 40},
    cert: {serial: '01', not_after: new Date(Date.now() + 30 * 86_400_000).toISOString()},
    agents: {},
    ...o,
  }
}

/** Node rows as a join leaves them (node_heartbeats references nodes). */
async function addNodes(db: Db, n: number): Promise<string[]> {
  const now = new Date()
  await db.query("INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ('HB Ingest Nodes', 'approved', $1, $1)", [now])
  const ids = Array.from({length: n}, (_, i) => nodeId(i))
  for (const [i, id] of ids.entries()) {
    await db.query("INSERT INTO nodes (id, zone, operator, track, status, created_at, joined_at) VALUES ($1, $2, 'HB Ingest Nodes', 'devnet', 'active', $3, $3)", [id, ZONES[i % 3], now])
  }
  return ids
}

describe.each(dbAdapters())('heartbeat ingest on $name', (adapter) => {
  let opened: OpenedDb
  let db: Db
  let ids: string[]
  const t0 = new Date('2026-03-01T12:00:00Z')

  beforeAll(async () => {
    opened = await adapter.open()
    db = opened.db
    ids = await addNodes(db, 30)
  })
  afterAll(async () => {
    await opened?.cleanup()
  })

  it('stores many concurrent heartbeats in few flushes: the newest per node in the latest state, every one in the history', async () => {
    const ing = new HeartbeatIngester(db, {maxBatch: 40, maxWaitMs: 5})
    // Five rounds from 30 nodes, all at once; round r is received at t0 + r s.
    const sent = Array.from({length: 150}, (_, k) => ({id: ids[k % 30]!, round: Math.floor(k / 30)}))
    await Promise.all(sent.map((s) => ing.submit(s.id, new Date(t0.getTime() + s.round * 1000), hb(s.id, {desired_sequence: s.round}))))
    expect(ing.stats.stored).toBe(150)
    expect(ing.stats.flushes).toBeLessThanOrEqual(10) // 150 heartbeats, batches of up to 40 (a few more only if the timer cut one short)
    expect(ing.stats.flushes).toBeGreaterThanOrEqual(4)

    const {rows: latest} = await db.query<{node_id: string; received_at: Date; seq: number}>("SELECT node_id, received_at, (body->>'desired_sequence')::int AS seq FROM node_heartbeats ORDER BY node_id")
    expect(latest).toHaveLength(30)
    for (const r of latest) expect(r).toMatchObject({received_at: new Date(t0.getTime() + 4000), seq: 4})
    const {rows: hist} = await db.query<{n: number; nodes: number}>('SELECT count(*)::int AS n, count(DISTINCT node_id)::int AS nodes FROM node_heartbeat_history')
    expect(hist[0]).toEqual({n: 150, nodes: 30})
    const {rows: one} = await db.query('SELECT containers_total, containers_running, cpu_percent, memory_percent, disk_percent, desired_sequence, versions_digest FROM node_heartbeat_history WHERE node_id = $1 ORDER BY received_at DESC LIMIT 1', [ids[0]])
    expect(one[0]).toMatchObject({containers_total: 2, containers_running: 2, cpu_percent: 12.5, memory_percent: 25, disk_percent: 40, desired_sequence: 4})
    expect(one[0]!.versions_digest).toMatch(/^[0-9a-f]{16}$/)

    // A batch that commits late with an older heartbeat never moves a node back in time.
    await ing.submit(ids[0]!, new Date(t0.getTime() - 60_000), hb(ids[0]!, {desired_sequence: 99}))
    const {rows: still} = await db.query<{seq: number}>("SELECT (body->>'desired_sequence')::int AS seq FROM node_heartbeats WHERE node_id = $1", [ids[0]])
    expect(still[0]!.seq).toBe(4)
    await ing.close()
    expect(ing.queued).toBe(0)
  })

  it('a heartbeat the database refuses fails alone (400 HEARTBEAT_REFUSED); the rest of its batch is stored', async () => {
    const ing = new HeartbeatIngester(db, {maxBatch: 6, maxWaitMs: 60_000})
    const at = new Date(t0.getTime() + 3_600_000)
    // PostgreSQL's jsonb refuses \u0000: the node's body, not the database, is at fault.
    const bad = hb(ids[2]!, {services: [{name: 'api\u0000', critical: true, state: 'running', health: 'healthy', digest: null, version: null}]})
    const results = await Promise.allSettled(ids.slice(0, 6).map((id) => ing.submit(id, at, id === ids[2] ? bad : hb(id))))
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'])
    expect((results[2] as PromiseRejectedResult).reason).toMatchObject({code: 'HEARTBEAT_REFUSED', status: 400})
    const {rows} = await db.query<{node_id: string}>('SELECT node_id FROM node_heartbeats WHERE received_at = $1 ORDER BY node_id', [at])
    expect(rows.map((r) => r.node_id)).toEqual(ids.slice(0, 6).filter((id) => id !== ids[2]).sort())
    await ing.close()
  })

  it('a failed flush fails exactly its requests with 503; the next batch is stored', async () => {
    let failNext = true
    // The real database, with one statement lost on the way (as when a connection drops).
    const flaky = Object.create(db, {
      query: {
        value: (sql: string, params?: readonly unknown[]) => {
          if (failNext && sql.includes('node_heartbeat_history')) {
            failNext = false
            return Promise.reject(Object.assign(new Error('Connection terminated unexpectedly'), {}))
          }
          return db.query(sql, params)
        },
      },
    }) as Db
    const ing = new HeartbeatIngester(flaky, {maxBatch: 3, maxWaitMs: 60_000, maxInFlight: 1})
    const at = new Date(t0.getTime() + 7_200_000)
    const results = await Promise.allSettled(ids.slice(10, 16).map((id) => ing.submit(id, at, hb(id))))
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'])
    for (const r of results.slice(0, 3)) expect((r as PromiseRejectedResult).reason).toMatchObject({code: 'HEARTBEAT_NOT_STORED', status: 503})
    const {rows} = await db.query<{node_id: string}>('SELECT node_id FROM node_heartbeat_history WHERE received_at = $1 ORDER BY node_id', [at])
    expect(rows.map((r) => r.node_id)).toEqual(ids.slice(13, 16).sort())
    await ing.close()
  })

  it('prunes history older than the retention period in batches, under the advisory lock, one run at a time', async () => {
    await db.exec('TRUNCATE node_heartbeat_history')
    const clock = new ManualClock(t0)
    const ing = new HeartbeatIngester(db, {maxBatch: 50, maxWaitMs: 1})
    // 25 heartbeats an hour apart for each of 4 nodes: from t0 - 24 h to t0.
    for (let h = 24; h >= 0; h--) {
      await Promise.all(ids.slice(0, 4).map((id) => ing.submit(id, new Date(t0.getTime() - h * 3_600_000), hb(id))))
    }
    await ing.close()
    const count = async () => (await db.query<{n: number}>('SELECT count(*)::int AS n FROM node_heartbeat_history')).rows[0]!.n
    expect(await count()).toBe(100)

    const retention = new HeartbeatRetention(db, clock, {retentionMs: 12 * 3_600_000, batch: 7})
    // Another replica holds the lock: this one prunes nothing.
    const other = await db.tryAdvisoryLock(LOCKS.heartbeatRetention)
    expect(other).not.toBeNull()
    expect(await retention.prune()).toBe(0)
    await other!.release()

    // Older than t0 - 12 h: hours 13..24, 12 per node.
    const a = retention.prune()
    const b = retention.prune()
    expect(b).toBe(a) // single-flight: the second call joins the run in flight
    expect(await a).toBe(48)
    expect(await count()).toBe(52)
    const {rows} = await db.query<{oldest: Date}>('SELECT min(received_at) AS oldest FROM node_heartbeat_history')
    expect(rows[0]!.oldest).toEqual(new Date(t0.getTime() - 12 * 3_600_000))

    clock.advance(6 * 3_600_000)
    expect(await retention.prune()).toBe(24)
    expect(await retention.prune()).toBe(0)
    retention.start()
    await retention.stop()
  })
})

describe('the heartbeat route through a real HQ', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  const nodes: TestNode[] = []
  const clients: HqClient[] = []
  const ids = ['CH-HBROUTE-01', 'SG-HBROUTE-02']

  beforeAll(async () => {
    t = await startTestHq()
    for (const [i, id] of ids.entries()) {
      const n = await joinTestNode(t.hq, t.admin, {nodeId: id, zone: i === 0 ? 'CH/FINMA' : 'SG/MAS'})
      nodes.push(n)
      const identity = await loadNodeIdentity(n.stateDir)
      clients.push(await HqClient.connect(t.hq.url, {cert: identity.certPem, key: identity.keyPem, ca: identity.caPem}))
    }
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    for (const n of nodes) await n.cleanup()
    await t?.stop()
  })

  it('answers concurrent heartbeats once stored, refuses one for another node (403), and keeps the history', async () => {
    const [a, b] = clients as [HqClient, HqClient]
    const answers = await Promise.all(Array.from({length: 20}, (_, i) => (i % 2 ? b.heartbeat(hb(ids[1]!)) : a.heartbeat(hb(ids[0]!)))))
    // Each 200 was sent after its batch committed: every answered heartbeat is in the database now.
    const {rows} = await t.hq.db.query<{node_id: string; n: number}>('SELECT node_id, count(*)::int AS n FROM node_heartbeat_history GROUP BY node_id ORDER BY node_id')
    expect(rows).toEqual([
      {node_id: ids[0], n: 10},
      {node_id: ids[1], n: 10},
    ])
    const newest = answers.map((r) => r.received_at).sort().at(-1)
    const {rows: latest} = await t.hq.db.query<{received_at: Date}>('SELECT max(received_at) AS received_at FROM node_heartbeats')
    expect(latest[0]!.received_at.toISOString()).toBe(newest)

    await expect(a.heartbeat(hb(ids[1]!))).rejects.toMatchObject({status: 403, code: 'NODE_MISMATCH'})
    const admin = await userClient(t.hq.url, t.admin)
    try {
      await expect(admin.heartbeat(hb(ids[0]!))).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    } finally {
      await admin.close()
    }
    const {rows: after} = await t.hq.db.query<{n: number}>('SELECT count(*)::int AS n FROM node_heartbeat_history')
    expect(after[0]!.n).toBe(20)
  })

  it('a principal kept with its socket dies with it: after a revoke, the node\'s next heartbeat (on a new connection) is refused', async () => {
    const b = clients[1]!
    await b.heartbeat(hb(ids[1]!)) // its connection now carries its principal
    const admin = await userClient(t.hq.url, t.admin)
    try {
      await admin.request('DELETE', `/v1/fleet/nodes/${ids[1]}`, {reason: 'heartbeat-ingest test'})
    } finally {
      await admin.close()
    }
    await expect(b.heartbeat(hb(ids[1]!))).rejects.toMatchObject({status: 401, code: 'CERT_REVOKED'})
    // The other node's cached connection is untouched.
    await clients[0]!.heartbeat(hb(ids[0]!))
  })
})
