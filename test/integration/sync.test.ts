import {afterAll, beforeAll, describe, expect, it, vi} from 'vitest'

import {systemClock} from '../../src/shared/clock.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {encodeEnvelope, parseEnvelope, rowKey, stateSyncTopic, uuidv7, type SyncEnvelope} from '../../src/shared/sync-envelope.js'
import {Applier, pruneApplied} from '../../src/sync/applier.js'
import {migrateNodeDb} from '../../src/sync/migrations.js'
import {emit} from '../../src/sync/outbox.js'
import {Relay} from '../../src/sync/relay.js'
import type {SyncTable} from '../../src/sync/tables.js'
import type {ConsumedBatch, Transport} from '../../src/sync/transport.js'
import {openPostgresLog} from '../../src/sync/transports/postgres-log.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

/**
 * The outbox contract, the relay and the applier in-process against real PostgreSQL databases (one
 * per node, one for the log): what services write reaches the bus in order, and what arrives is
 * applied once, converging whatever the order.
 */

const TABLES: SyncTable[] = [{name: 'wallet_accounts', key: ['id'], version: 'version'}]
const TOPIC = stateSyncTopic('wallet_accounts')
const SCHEMA = 'CREATE TABLE wallet_accounts (id text PRIMARY KEY, owner text, balance bigint NOT NULL, version bigint NOT NULL)'

type Node = {id: string; db: Db; drop: () => Promise<void>}

async function node(id: string): Promise<Node> {
  const d = await freshPgDatabase()
  const db = await openPg(d.url)
  await db.exec(SCHEMA)
  await migrateNodeDb(db, id)
  return {
    id,
    db,
    drop: async () => {
      await db.close()
      await d.drop()
    },
  }
}

const seqs = new Map<string, number>()
function event(source: string, o: {key: string; version: number; balance?: number; op?: 'upsert' | 'delete'; ts?: string; seq?: number}): SyncEnvelope {
  const seq = o.seq ?? (seqs.get(source) ?? 0) + 1
  seqs.set(source, Math.max(seq, seqs.get(source) ?? 0))
  const op = o.op ?? 'upsert'
  return {
    event_id: uuidv7(),
    source_id: source,
    topic: TOPIC,
    ts: o.ts ?? '2026-01-01T00:00:00.000000Z',
    seq,
    schema: 1,
    key: rowKey([o.key]),
    payload: {table: 'wallet_accounts', op, key: [o.key], version: o.version, row: op === 'delete' ? null : {id: o.key, owner: source, balance: o.balance ?? o.version * 10, version: o.version}},
  }
}

let offset = 0
function batch(...events: SyncEnvelope[]): ConsumedBatch {
  return {topic: TOPIC, partition: 0, records: events.map((e) => ({offset: offset++, key: e.key, value: encodeEnvelope(e), timestamp: new Date()}))}
}

async function rows(db: Db): Promise<{id: string; owner: string; balance: number; version: number}[]> {
  return (await db.query<{id: string; owner: string; balance: number; version: number}>('SELECT id, owner, balance, version FROM wallet_accounts ORDER BY id')).rows
}

describe.runIf(hasPg)('event sync: outbox, relay, applier', () => {
  let a: Node
  let b: Node
  let log: Awaited<ReturnType<typeof freshPgDatabase>>
  let transport: Transport
  beforeAll(async () => {
    ;[a, b, log] = await Promise.all([node('CH-ZUG-01'), node('SG-SIN-01'), freshPgDatabase()])
    transport = await openPostgresLog(log.url)
  })
  afterAll(async () => {
    await transport?.close()
    await Promise.all([a?.drop(), b?.drop(), log?.drop()])
  })

  it('migrates the node database idempotently, with its own migrations table', async () => {
    await migrateNodeDb(a.db, 'CH-ZUG-01')
    const {rows: m} = await a.db.query<{version: number}>('SELECT version FROM jil_sync_migrations ORDER BY version')
    expect(m.map((r) => r.version)).toEqual([1, 2, 3])
    expect((await a.db.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations'")).rowCount).toBe(0)
  })

  it('records a change in the outbox only if the service transaction commits', async () => {
    await a.db.transaction(async (tx) => {
      await tx.query("INSERT INTO wallet_accounts VALUES ('acct-1', 'alice', 100, 1)")
      await emit(tx, {table: 'wallet_accounts', key: 'acct-1', version: 1, op: 'upsert', row: {id: 'acct-1', owner: 'alice', balance: 100, version: 1}})
    })
    await expect(
      a.db.transaction(async (tx) => {
        await tx.query("INSERT INTO wallet_accounts VALUES ('acct-2', 'bob', 5, 1)")
        await emit(tx, {table: 'wallet_accounts', key: ['acct-2'], version: 1, op: 'upsert', row: {id: 'acct-2', owner: 'bob', balance: 5, version: 1}})
        throw new Error('the service failed after emitting')
      }),
    ).rejects.toThrow(/service failed/)
    const {rows: out} = await a.db.query<{key: string[]; op: string; seq: number | null}>('SELECT key, op, seq FROM jil_outbox ORDER BY id')
    expect(out).toEqual([{key: ['acct-1'], op: 'upsert', seq: null}])
  })

  it('publishes the outbox in order with sequences 1, 2, 3 and marks it sent; nothing twice', async () => {
    await a.db.transaction(async (tx) => {
      await tx.query("UPDATE wallet_accounts SET balance = 150, version = 2 WHERE id = 'acct-1'")
      await emit(tx, {table: 'wallet_accounts', key: 'acct-1', version: 2, op: 'upsert', row: {id: 'acct-1', owner: 'alice', balance: 150, version: 2}})
      await tx.query("DELETE FROM wallet_accounts WHERE id = 'acct-1'")
      await emit(tx, {table: 'wallet_accounts', key: 'acct-1', version: 3, op: 'delete'})
    })
    const relay = new Relay({db: a.db, transport, clock: systemClock, partitions: 3})
    await transport.ensureTopics([{name: TOPIC, partitions: 3}])
    expect(await relay.backlog()).toBe(3)
    expect(await relay.drain()).toEqual({published: 3, standby: false})
    expect(await relay.backlog()).toBe(0)
    expect((await relay.drain()).published).toBe(0)

    const seen: SyncEnvelope[] = []
    const c = await transport.consume({group: 'probe', topics: [TOPIC], position: async (tps) => tps.map((tp) => ({...tp, offset: 0})), onBatch: async (bt) => void seen.push(...bt.records.map((r) => parseEnvelope(r.value)))})
    const end = Date.now() + 10_000
    while (seen.length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
    await c.stop()
    expect(seen.map((e) => [e.seq, (e.payload as {op: string}).op, (e.payload as {version: number}).version])).toEqual([
      [1, 'upsert', 1],
      [2, 'upsert', 2],
      [3, 'delete', 3],
    ])
    expect(new Set(seen.map((e) => e.source_id))).toEqual(new Set(['CH-ZUG-01']))
    // One row's events share a key, hence a partition, hence their order.
    expect(new Set(seen.map((e) => e.key))).toEqual(new Set(['["acct-1"]']))
    // Microsecond timestamps travel as written (convergence compares them on every node alike).
    expect(seen[0]!.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)
  })

  it('skips its own events, applies duplicates once, and keeps the offset with the change', async () => {
    const ap = new Applier({db: b.db, sourceId: 'SG-SIN-01', tables: TABLES})
    await ap.init()
    const e1 = event('CH-ZUG-01', {key: 'k1', version: 1})
    const own = event('SG-SIN-01', {key: 'k-own', version: 1})
    const r1 = await ap.apply(batch(e1, own, e1))
    expect(r1).toMatchObject({records: 3, applied: 1, duplicates: 1, own: 1, changed: 1})
    const r2 = await ap.apply(batch(e1))
    expect(r2).toMatchObject({applied: 0, duplicates: 1, changed: 0})
    expect(await rows(b.db)).toEqual([{id: 'k1', owner: 'CH-ZUG-01', balance: 10, version: 1}])
    const src = await b.db.query<{source_id: string; events: number}>('SELECT source_id, events FROM jil_sync_sources')
    expect(src.rows).toEqual([{source_id: 'CH-ZUG-01', events: 1}])
    const [pos] = await ap.position([{topic: TOPIC, partition: 0}])
    expect(pos!.offset).toBe(offset)
  })

  it('converges on (version, then ts, then source_id) whatever the arrival order, and a delete stays deleted', async () => {
    const t1 = '2026-01-01T00:00:01.000001Z'
    const t2 = '2026-01-01T00:00:01.000002Z'
    const changes = [
      event('AE-ADG-01', {key: 'k2', version: 2, ts: t2}),
      event('US-NYC-01', {key: 'k2', version: 2, ts: t1}),
      event('US-NYC-01', {key: 'k2', version: 1, ts: t2}),
      event('AE-ADG-01', {key: 'k3', version: 5, ts: t1, balance: 1}),
      event('US-NYC-01', {key: 'k3', version: 5, ts: t1, balance: 2}),
      event('AE-ADG-01', {key: 'k4', version: 3, op: 'delete'}),
      event('US-NYC-01', {key: 'k4', version: 2}),
    ]
    const finals: unknown[] = []
    for (const order of [changes, [...changes].reverse(), [changes[2]!, changes[6]!, changes[0]!, changes[4]!, changes[1]!, changes[5]!, changes[3]!]]) {
      const n = await node('GB-LON-01')
      try {
        const ap = new Applier({db: n.db, sourceId: 'GB-LON-01', tables: TABLES})
        await ap.init()
        // One event per batch: every arrival order is a different sequence of transactions.
        for (const e of order) await ap.apply(batch(e))
        finals.push(await rows(n.db))
      } finally {
        await n.drop()
      }
    }
    expect(finals[0]).toEqual([
      {id: 'k2', owner: 'AE-ADG-01', balance: 20, version: 2},
      // Equal version and ts: the greater source_id wins.
      {id: 'k3', owner: 'US-NYC-01', balance: 2, version: 5},
    ])
    expect(finals[1]).toEqual(finals[0])
    expect(finals[2]).toEqual(finals[0])
  })

  it('records gaps in a source sequence and closes them when the late events come', async () => {
    const n = await node('JP-TYO-01')
    try {
      const ap = new Applier({db: n.db, sourceId: 'JP-TYO-01', tables: TABLES})
      await ap.init()
      const e = (seq: number) => event('BR-SAO-01', {key: `g${seq}`, version: 1, seq})
      await ap.apply(batch(e(1), e(2), e(6), e(9)))
      const gaps = async () => (await n.db.query<{from_seq: number; to_seq: number}>('SELECT from_seq, to_seq FROM jil_sync_gaps ORDER BY from_seq')).rows
      expect(await gaps()).toEqual([
        {from_seq: 3, to_seq: 5},
        {from_seq: 7, to_seq: 8},
      ])
      await ap.apply(batch(e(4), e(8)))
      expect(await gaps()).toEqual([
        {from_seq: 3, to_seq: 3},
        {from_seq: 5, to_seq: 5},
        {from_seq: 7, to_seq: 7},
      ])
      await ap.apply(batch(e(3), e(5), e(7)))
      expect(await gaps()).toEqual([])
      const {rows: s} = await n.db.query<{last_seq: number; events: number}>("SELECT last_seq, events FROM jil_sync_sources WHERE source_id = 'BR-SAO-01'")
      expect(s).toEqual([{last_seq: 9, events: 9}])
    } finally {
      await n.drop()
    }
  })

  it('applies a batch prepared ahead (prefetch, while the one before it commits) exactly as one applied alone', async () => {
    const X = 'CA-TOR-01'
    const Y = 'HK-HKG-01'
    const e = {
      x1: event(X, {key: 'p1', version: 1, seq: 1}),
      x3: event(X, {key: 'p2', version: 3, seq: 3}),
      x2: event(X, {key: 'p3', version: 1, seq: 2}),
      x4: event(X, {key: 'p4', version: 2, seq: 4}),
      x5: event(X, {key: 'p5', version: 3, seq: 5}),
      y1: event(Y, {key: 'p2', version: 2, seq: 1}),
      y2: event(Y, {key: 'p5', version: 2, seq: 2, balance: 77}),
      y3: event(Y, {key: 'p4', version: 1, seq: 3, op: 'delete'}),
    }
    // Batch 2 repeats x1 (below X's watermark), x3 (between watermark and last seq, seen by id) and
    // x5; batch 3 has x5 once more beside y2 (a fresh change of x5's row, lower than x5).
    const batches = [[e.x1, e.x3, e.x5, e.y1], [e.x1, e.x3, e.x2, e.x4, e.y1], [e.x5, e.y2, e.y3, e.x5]]
    const outcome: unknown[] = []
    for (const ahead of [false, true]) {
      const n = await node(ahead ? 'AU-SYD-02' : 'AU-SYD-01')
      try {
        const ap = new Applier({db: n.db, sourceId: 'AU-SYD-00', tables: TABLES})
        await ap.init()
        const bs = batches.map((events) => batch(...events))
        const results = []
        for (const [i, b] of bs.entries()) {
          if (ahead && bs[i + 1]) ap.prefetch(bs[i + 1]!)
          // Before batch 3: a service here rewrites p5 with a lower version than x5's (its write, its
          // business). x5 comes again in batch 3 and is a duplicate, so p5 goes to y2, the best
          // fresh change of that row, though x5 was the row's winner when batch 3 was planned ahead.
          if (i === 2) {
            await n.db.transaction(async (tx) => {
              await tx.query("UPDATE wallet_accounts SET owner = 'local', balance = 1, version = 1 WHERE id = 'p5'")
              await emit(tx, {table: 'wallet_accounts', key: 'p5', version: 1, op: 'upsert', row: {id: 'p5', owner: 'local', balance: 1, version: 1}})
            })
          }
          results.push(await ap.apply(b))
        }
        const sources = (await n.db.query('SELECT source_id, last_seq, events FROM jil_sync_sources ORDER BY source_id')).rows
        outcome.push({results, rows: await rows(n.db), sources})
      } finally {
        await n.drop()
      }
    }
    expect(outcome[0]).toMatchObject({
      results: [
        // p2: x3 (version 3) over y1 (version 2), within the batch.
        {records: 4, applied: 4, duplicates: 0, changed: 3},
        {records: 5, applied: 2, duplicates: 3, changed: 2},
        // y2 takes p5; y3's delete of p4 (version 1) loses to x4 (version 2).
        {records: 4, applied: 2, duplicates: 2, changed: 1},
      ],
      rows: [
        {id: 'p1', owner: X, version: 1},
        {id: 'p2', owner: X, version: 3},
        {id: 'p3', owner: X, version: 1},
        {id: 'p4', owner: X, version: 2},
        {id: 'p5', owner: Y, balance: 77, version: 2},
      ],
    })
    expect(outcome[1]).toEqual(outcome[0])
  })

  it('prepares a batch of several slices ahead while the batch before it holds its transaction open, to the same result', async () => {
    const X = 'KR-SEL-01'
    const Y = 'IN-BOM-01'
    // X changes 300 rows five times over (seq s: row s mod 300, version 1 + ⌊(s-1)/300⌋); Y writes
    // 200 changes at version 3 among them, which X's later versions beat.
    const xs = Array.from({length: 1500}, (_, i) => event(X, {key: `q${String(i % 300).padStart(3, '0')}`, version: Math.floor(i / 300) + 1, seq: i + 1}))
    const ys = Array.from({length: 200}, (_, i) => event(Y, {key: `q${String((i * 7) % 300).padStart(3, '0')}`, version: 3, seq: i + 1, balance: i}))
    // The second batch (1250 records: five prefetch slices) starts inside the first one's span: 250
    // of its events are applied by the first batch, which commits only after the second was planned.
    const first = [...xs.slice(0, 600), ...ys.slice(0, 100)]
    const second = [...xs.slice(400).reverse(), ...ys.slice(50)]
    const outcome: unknown[] = []
    for (const ahead of [false, true]) {
      const n = await node(ahead ? 'KR-SEL-03' : 'KR-SEL-02')
      try {
        const [b1, b2] = [batch(...first), batch(...second)]
        let started = false
        const ap: Applier = new Applier({
          db: n.db,
          sourceId: 'KR-SEL-00',
          tables: TABLES,
          // The first batch's transaction stays open while the second is prepared slice by slice.
          beforeCommit: async () => {
            if (!ahead || started) return
            started = true
            ap.prefetch(b2)
            for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r))
          },
        })
        await ap.init()
        // Which batches were decoded and planned, and in slices of what size: ahead, the second one
        // once, in slices (apply takes that result instead of preparing it again).
        const prepared = vi.spyOn(ap as unknown as {prepare: (b: ConsumedBatch, slice: number) => Promise<unknown>}, 'prepare')
        const results = [await ap.apply(b1), await ap.apply(b2)]
        const sources = (await n.db.query('SELECT source_id, last_seq, events FROM jil_sync_sources ORDER BY source_id')).rows
        const gaps = (await n.db.query('SELECT count(*)::int AS n FROM jil_sync_gaps')).rows
        outcome.push({results, rows: await rows(n.db), sources, gaps})
        expect(started).toBe(ahead)
        expect(prepared.mock.calls.map(([b, slice]) => [b === b1 ? 'b1' : 'b2', slice])).toEqual(ahead ? [['b1', Infinity], ['b2', 250]] : [['b1', Infinity], ['b2', Infinity]])
      } finally {
        await n.drop()
      }
    }
    expect(outcome[0]).toMatchObject({
      results: [
        {records: 700, applied: 700, duplicates: 0},
        {records: 1250, applied: 1000, duplicates: 250},
      ],
      sources: [
        {source_id: Y, last_seq: 200, events: 200},
        {source_id: X, last_seq: 1500, events: 1500},
      ],
      gaps: [{n: 0}],
    })
    const final = (outcome[0] as {rows: {id: string; owner: string; version: number}[]}).rows
    expect(final).toHaveLength(300)
    expect(final.every((r) => r.owner === X && r.version === 5)).toBe(true)
    expect(outcome[1]).toEqual(outcome[0])
  })

  it('keeps its de-duplication table bounded: ids only above a source watermark, pruned below it, duplicates still refused', async () => {
    const n = await node('IN-MUM-01')
    try {
      const ap = new Applier({db: n.db, sourceId: 'IN-MUM-01', tables: TABLES})
      await ap.init()
      const src = 'DE-FRA-01'
      const e = Object.fromEntries([1, 2, 3, 4, 5, 6, 7].map((seq) => [seq, event(src, {key: `w${seq}`, version: 1, seq})])) as Record<number, SyncEnvelope>
      const recorded = async () => (await n.db.query<{seq: number}>('SELECT seq FROM jil_sync_applied WHERE source_id = $1 ORDER BY seq', [src])).rows.map((r) => Number(r.seq))
      const table = async () => (await rows(n.db)).filter((r) => r.id.startsWith('w'))

      // 1, 2, 3 are below the watermark at once (contiguous from the start): only 5, past the gap at 4, is kept by id.
      expect(await ap.apply(batch(e[1]!, e[2]!, e[3]!, e[5]!))).toMatchObject({applied: 4, changed: 4})
      expect(await recorded()).toEqual([5])
      // Sent again, each is a duplicate: 2 by its seq, 5 by its id.
      expect(await ap.apply(batch(e[2]!, e[5]!))).toMatchObject({applied: 0, duplicates: 2, changed: 0})
      // 5 sits above the watermark (3): pruning never removes it, however old.
      expect(await pruneApplied(n.db, {now: new Date(Date.now() + 86_400_000), retentionMs: 0})).toEqual({pruned: 0})
      expect(await recorded()).toEqual([5])

      // 4 closes the gap: the watermark is now 5, and 5's row is redundant.
      expect(await ap.apply(batch(e[4]!))).toMatchObject({applied: 1})
      // Too young for the retention: kept.
      expect(await pruneApplied(n.db, {now: new Date(), retentionMs: 3_600_000})).toEqual({pruned: 0})
      expect(await pruneApplied(n.db, {now: new Date(Date.now() + 7_200_000), retentionMs: 3_600_000})).toEqual({pruned: 1})
      expect(await recorded()).toEqual([])
      // Pruned, yet still a duplicate: known by the watermark.
      const before = await table()
      expect(await ap.apply(batch(e[5]!, e[4]!, e[1]!))).toMatchObject({applied: 0, duplicates: 3, changed: 0})
      expect(await table()).toEqual(before)

      // Several rounds: 7 and 6 arrive out of order (7 is kept by id), then the chunked prune takes each in turn.
      await ap.apply(batch(e[7]!))
      await ap.apply(batch(e[6]!))
      expect(await recorded()).toEqual([7])
      await ap.apply(batch(event(src, {key: 'w9', version: 1, seq: 9})))
      expect(await recorded()).toEqual([7, 9])
      // 9 is above the watermark (7; 8 is missing): only 7 goes, in rounds of one row.
      expect(await pruneApplied(n.db, {now: new Date(Date.now() + 7_200_000), retentionMs: 3_600_000, chunk: 1})).toEqual({pruned: 1})
      expect(await recorded()).toEqual([9])
      expect(await ap.apply(batch(e[7]!, e[6]!))).toMatchObject({applied: 0, duplicates: 2})
    } finally {
      await n.drop()
    }
  })

  it('refuses a declared table that is missing or has no unique key', async () => {
    const n = await node('KR-SEL-01')
    try {
      await expect(new Applier({db: n.db, sourceId: 'KR-SEL-01', tables: [{name: 'settlements', key: ['id'], version: 'version'}]}).init()).rejects.toMatchObject({code: 'SYNC_TABLE_MISSING'})
      await n.db.exec('CREATE TABLE settlements (id text, version bigint)')
      await expect(new Applier({db: n.db, sourceId: 'KR-SEL-01', tables: [{name: 'settlements', key: ['id'], version: 'version'}]}).init()).rejects.toMatchObject({code: 'SYNC_TABLE_INVALID'})
    } finally {
      await n.drop()
    }
  })

  it('refuses to emit before sync is set up in a database', async () => {
    const d = await freshPgDatabase()
    const db = await openPg(d.url)
    try {
      await db.exec(SCHEMA)
      await migrateNodeDb(db, 'CA-TOR-01')
      await db.query('DELETE FROM jil_sync_node')
      await expect(db.transaction((tx) => emit(tx, {table: 'wallet_accounts', key: 'x', version: 1, op: 'delete'}))).rejects.toThrow(/not set up/)
    } finally {
      await db.close()
      await d.drop()
    }
  })
})

