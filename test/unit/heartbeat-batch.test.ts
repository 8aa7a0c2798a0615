import {describe, expect, it} from 'vitest'

import {HeartbeatIngester, historySummary} from '../../src/hq/fleet/heartbeats.js'
import type {Heartbeat} from '../../src/shared/api.js'
import type {Db, QueryResult} from '../../src/shared/db/types.js'

/**
 * The batcher's scheduling, against a recording Db whose statements the test commits or fails one by
 * one: the honest fake here, since what is tested is when statements are sent and requests answered
 * (the integration test runs the same ingester on PGlite and PostgreSQL).
 */
function recordingDb(kind: 'pg' | 'pglite' = 'pg') {
  const calls: {params: unknown[]; commit: () => void; fail: (err: unknown) => void}[] = []
  const waiters: (() => void)[] = []
  const db = {
    kind,
    query(_sql: string, params: readonly unknown[] = []): Promise<QueryResult> {
      return new Promise((resolve, reject) => {
        calls.push({params: [...params], commit: () => resolve({rows: [], rowCount: (params[3] as unknown[]).length}), fail: reject})
        for (const w of waiters.splice(0)) w()
      })
    },
  } as unknown as Db
  const nodesOf = (i: number) => calls[i]!.params[3] as string[]
  const latestOf = (i: number) => calls[i]!.params[0] as string[]
  /** Resolves once `n` statements have been sent. */
  const sent = async (n: number) => {
    while (calls.length < n) await new Promise<void>((r) => waiters.push(r))
  }
  return {db, calls, nodesOf, latestOf, sent}
}

function hb(nodeId: string, o: Partial<Heartbeat> = {}): Heartbeat {
  return {
    node_id: nodeId,
    time: '2026-01-01T00:00:00Z',
    agent_version: '0.0.0-test',
    run_mode: 'running',
    desired_sequence: 3,
    containers: {total: 3, running: 2, healthy: 2, unhealthy: 1, exited: 1, restarting: 0, other: 0},
    services: [
      {name: 'api', critical: true, state: 'running', health: 'healthy', digest: `sha256:${'a'.repeat(64)}`, version: 'v1.0'},
      {name: 'db', critical: true, state: 'running', health: 'unhealthy', digest: `sha256:${'b'.repeat(64)}`, version: 'v2.0'},
    ],
    system: {cpu_percent: 12.5, load1: 0.4, memory_used_bytes: 2e9, memory_total_bytes: 8e9, disk_used_bytes: 40e9, disk_total_bytes: 100e9, disk_percent: 40},
    cert: {serial: '01', not_after: '2026-02-01T00:00:00Z'},
    agents: {},
    ...o,
  }
}

const at = new Date('2026-01-01T00:00:00Z')
const settled = async (ps: Promise<unknown>[]) => Promise.allSettled(ps)
const id = (i: number) => `CH-HBUNIT-${String(i).padStart(3, '0')}`

describe('the heartbeat batcher', () => {
  it('flushes a full batch at once, in one statement, and answers each request only after its batch committed', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 50, maxWaitMs: 60_000, maxInFlight: 1})
    let answered = 0
    const ps = Array.from({length: 120}, (_, i) => ing.submit(id(i), at, hb(id(i))).then(() => answered++))
    await f.sent(1)
    expect(f.calls).toHaveLength(1) // one flush in flight: the next full batch waits for it
    expect(f.nodesOf(0)).toEqual(Array.from({length: 50}, (_, i) => id(i)))
    await new Promise((r) => setTimeout(r, 20))
    expect(answered).toBe(0) // nothing answered before the commit

    f.calls[0]!.commit()
    await f.sent(2)
    expect(answered).toBe(50)
    expect(f.nodesOf(1)).toHaveLength(50)
    f.calls[1]!.commit()
    // The last 20 wait for maxWaitMs (a minute here) unless closed: close flushes them.
    await new Promise((r) => setTimeout(r, 20))
    expect(f.calls).toHaveLength(2)
    expect(answered).toBe(100)
    const closing = ing.close()
    await f.sent(3)
    expect(f.nodesOf(2)).toHaveLength(20)
    f.calls[2]!.commit()
    await closing
    await Promise.all(ps)
    expect(answered).toBe(120)
    expect(ing.stats).toMatchObject({flushes: 3, stored: 120, failed: 0})
    await expect(ing.submit(id(1), at, hb(id(1)))).rejects.toMatchObject({code: 'HQ_CLOSING', status: 503})
  })

  it('flushes a partial batch once its first heartbeat has waited maxWaitMs', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 200, maxWaitMs: 5})
    const ps = [1, 2, 3].map((i) => ing.submit(id(i), at, hb(id(i))))
    await f.sent(1)
    expect(f.nodesOf(0)).toEqual([id(1), id(2), id(3)])
    f.calls[0]!.commit()
    await Promise.all(ps)
    await ing.close()
  })

  it('keeps one latest row per node in a batch (the newest) and every heartbeat for the history', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 4, maxWaitMs: 60_000})
    const later = new Date(at.getTime() + 1000)
    const ps = [ing.submit(id(2), at, hb(id(2))), ing.submit(id(1), at, hb(id(1))), ing.submit(id(2), later, hb(id(2), {desired_sequence: 4})), ing.submit(id(3), at, hb(id(3)))]
    await f.sent(1)
    // Sorted by node id: concurrent flushes lock rows in one order.
    expect(f.latestOf(0)).toEqual([id(1), id(2), id(3)])
    expect(f.calls[0]!.params[1]).toEqual([at.toISOString(), later.toISOString(), at.toISOString()])
    expect(JSON.parse((f.calls[0]!.params[2] as string[])[1]!).desired_sequence).toBe(4)
    expect(f.nodesOf(0)).toEqual([id(2), id(1), id(2), id(3)])
    f.calls[0]!.commit()
    await Promise.all(ps)
    await ing.close()
  })

  it('a failed flush fails exactly its own requests with 503 HEARTBEAT_NOT_STORED; the next batch is stored', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 3, maxWaitMs: 60_000, maxInFlight: 2})
    const first = [1, 2, 3].map((i) => ing.submit(id(i), at, hb(id(i))))
    const second = [4, 5, 6].map((i) => ing.submit(id(i), at, hb(id(i))))
    await f.sent(2)
    f.calls[0]!.fail(Object.assign(new Error('Connection terminated unexpectedly'), {code: undefined}))
    f.calls[1]!.commit()
    const [a, b] = [await settled(first), await settled(second)]
    expect(a.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])
    for (const r of a) expect((r as PromiseRejectedResult).reason).toMatchObject({code: 'HEARTBEAT_NOT_STORED', status: 503})
    expect(b.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled'])
    expect(f.calls).toHaveLength(2) // an outage is not retried row by row
    expect(ing.stats).toMatchObject({stored: 3, failed: 3})
    await ing.close()
  })

  it('a row the database refuses is found by splitting its batch: only that heartbeat fails (400), the others are stored', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 4, maxWaitMs: 60_000})
    const bad = id(3)
    const ps = [1, 2, 3, 4].map((i) => ing.submit(id(i), at, hb(id(i))))
    // Answer each statement as PostgreSQL would: refuse any that carries the bad row.
    for (let i = 0; ; i++) {
      const done = await Promise.race([f.sent(i + 1).then(() => false), settled(ps).then(() => true)])
      if (done) break
      if (f.nodesOf(i).includes(bad)) f.calls[i]!.fail(Object.assign(new Error('unsupported Unicode escape sequence'), {code: '22P05'}))
      else f.calls[i]!.commit()
    }
    const r = await settled(ps)
    expect(r.map((x) => x.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
    expect((r[2] as PromiseRejectedResult).reason).toMatchObject({code: 'HEARTBEAT_REFUSED', status: 400})
    expect(ing.stats).toMatchObject({stored: 3, failed: 1})
    await ing.close()
  })

  it('refuses at once with 503 HEARTBEAT_BUSY beyond maxQueued instead of queueing without bound', async () => {
    const f = recordingDb()
    const ing = new HeartbeatIngester(f.db, {maxBatch: 2, maxWaitMs: 60_000, maxInFlight: 1, maxQueued: 4})
    const ps = Array.from({length: 6}, (_, i) => ing.submit(id(i), at, hb(id(i))))
    const over = ing.submit(id(9), at, hb(id(9)))
    await expect(over).rejects.toMatchObject({code: 'HEARTBEAT_BUSY', status: 503})
    await f.sent(1)
    const closing = ing.close()
    for (let i = 0; i < 3; i++) {
      await f.sent(i + 1)
      f.calls[i]!.commit()
    }
    await closing
    expect((await settled(ps)).every((r) => r.status === 'fulfilled')).toBe(true)
  })
})

describe('historySummary', () => {
  it('keeps counts, percentages and a digest of what runs; the digest ignores service order and follows versions', () => {
    const h = hb('CH-HBUNIT-01')
    const s = historySummary(h)
    expect(s).toMatchObject({containers_total: 3, containers_running: 2, containers_unhealthy: 1, cpu_percent: 12.5, memory_percent: 25, disk_percent: 40, desired_sequence: 3})
    expect(s.versions_digest).toMatch(/^[0-9a-f]{16}$/)
    expect(historySummary({...h, services: [...h.services].reverse()}).versions_digest).toBe(s.versions_digest)
    expect(historySummary({...h, services: [{...h.services[0]!, version: 'v1.1'}, h.services[1]!]}).versions_digest).not.toBe(s.versions_digest)
  })

  it('clamps what would overflow the history columns (the body keeps the node\'s values)', () => {
    const s = historySummary(hb('CH-HBUNIT-01', {containers: {total: 1e12, running: 0, healthy: 0, unhealthy: 0, exited: 0, restarting: 0, other: 0}, system: {cpu_percent: 1e300, load1: 0, memory_used_bytes: 1, memory_total_bytes: 0, disk_used_bytes: 0, disk_total_bytes: 0, disk_percent: -1e300}}))
    expect(s).toMatchObject({containers_total: 2 ** 31 - 1, cpu_percent: 3.4e38, memory_percent: 0, disk_percent: -3.4e38})
  })
})
