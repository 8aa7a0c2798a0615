import {join} from 'node:path'

import pg from 'pg'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {encodeEnvelope, rowKey, stateSyncTopic, uuidv7, type SyncEnvelope} from '../../src/shared/sync-envelope.js'
import {emit} from '../../src/sync/outbox.js'
import type {Transport} from '../../src/sync/transport.js'
import {openPostgresLog} from '../../src/sync/transports/postgres-log.js'
import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {freshPgDatabase, hasPg, PG_URL} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

/**
 * Event sync with real processes: each simulated node is its own PostgreSQL database and its own
 * `jil node sync run` child process (relay + applier), all on one postgres-log database. The test
 * plays the services: it writes rows and calls jil_emit in one transaction on a node's database.
 */

const TABLES = 'wallet_accounts:id:version,settlements:id:version'
const SCHEMA = `
CREATE TABLE wallet_accounts (id text PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, version bigint NOT NULL);
CREATE TABLE settlements (id text PRIMARY KEY, amount numeric NOT NULL, state text NOT NULL, version bigint NOT NULL);`

type SimNode = {
  id: string
  db: Db
  url: string
  env: NodeJS.ProcessEnv
  proc?: Awaited<ReturnType<typeof jilServe>>
  drop: () => Promise<void>
}

describe.runIf(hasPg)('event sync between node processes (postgres-log)', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let log: Awaited<ReturnType<typeof freshPgDatabase>>
  let bus: Transport
  const nodes: Record<string, SimNode> = {}

  async function makeNode(id: string, extra: NodeJS.ProcessEnv = {}): Promise<SimNode> {
    const d = await freshPgDatabase()
    const db = await openPg(d.url, {max: 3})
    await db.exec(SCHEMA)
    const env: NodeJS.ProcessEnv = {
      JIL_STATE_DIR: join(tmp.dir, id),
      JIL_NODE_ID: id,
      JIL_SYNC_TRANSPORT: 'postgres-log',
      JIL_NODE_DATABASE_URL: d.url,
      JIL_SYNC_LOG_URL: log.url,
      JIL_SYNC_TABLES: TABLES,
      JIL_SYNC_PARTITIONS: '3',
      JIL_SYNC_BATCH: '40',
      JIL_SYNC_STATUS_EVERY_MS: '300',
      JIL_LOG_LEVEL: 'warn',
      ...extra,
    }
    const n: SimNode = {id, db, url: d.url, env, drop: async () => (await db.close(), await d.drop())}
    nodes[id] = n
    return n
  }

  async function start(n: SimNode, extra: NodeJS.ProcessEnv = {}): Promise<void> {
    n.proc = await jilServe(['node', 'sync', 'run', '--json'], {...n.env, ...extra})
    expect(n.proc.ready).toMatchObject({node_id: n.id})
    // The runner migrates the node database in the background: services can emit once it has.
    await until(`${n.id} set up`, async () => ((await n.db.query('SELECT 1 FROM jil_sync_node').catch(() => ({rowCount: 0}))).rowCount ? true : undefined), 30_000)
  }

  async function stop(n: SimNode): Promise<void> {
    if (!n.proc) return
    n.proc.child.kill('SIGTERM')
    await n.proc.exited
    n.proc = undefined
  }

  /** What a service does: change the row and emit, in one transaction; the version grows by one. */
  async function write(n: SimNode, id: string, balance: number): Promise<void> {
    await n.db.transaction(async (tx) => {
      const cur = await tx.query<{version: number}>('SELECT version FROM wallet_accounts WHERE id = $1 FOR UPDATE', [id])
      const version = (cur.rows[0]?.version ?? 0) + 1
      await tx.query(
        `INSERT INTO wallet_accounts (id, owner, balance, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, balance = EXCLUDED.balance, version = EXCLUDED.version`,
        [id, n.id, balance, version],
      )
      await emit(tx, {table: 'wallet_accounts', key: id, version, op: 'upsert', row: {id, owner: n.id, balance, version}})
    })
  }

  async function settle(n: SimNode, id: string, amount: string): Promise<void> {
    await n.db.transaction(async (tx) => {
      await tx.query('INSERT INTO settlements (id, amount, state, version) VALUES ($1, $2, $3, 1)', [id, amount, 'settled'])
      await emit(tx, {table: 'settlements', key: id, version: 1, op: 'upsert', row: {id, amount, state: 'settled', version: 1}})
    })
  }

  async function checksum(n: SimNode): Promise<string> {
    const w = await n.db.query<{c: string | null; n: number}>(
      "SELECT md5(string_agg(id || ':' || owner || ':' || balance || ':' || version, ',' ORDER BY id)) AS c, count(*)::bigint AS n FROM wallet_accounts",
    )
    const s = await n.db.query<{c: string | null}>("SELECT md5(string_agg(id || ':' || amount || ':' || state || ':' || version, ',' ORDER BY id)) AS c FROM settlements")
    return `${w.rows[0]!.n}/${w.rows[0]!.c}/${s.rows[0]!.c}`
  }

  async function status(n: SimNode): Promise<any> {
    const r = await jil(['node', 'sync', 'status', '--json'], n.env)
    expect(r.code, r.stderr).toBe(0)
    return r.json()
  }

  /** Every listed node caught up (status file fresh and caught_up, outbox empty) with one checksum. */
  async function converged(list: SimNode[], timeoutMs = 90_000): Promise<string> {
    return until(
      `${list.map((n) => n.id).join(', ')} converge`,
      async () => {
        for (const n of list) {
          const backlog = await n.db.query<{n: number}>('SELECT count(*)::bigint AS n FROM jil_outbox WHERE sent_at IS NULL')
          if (backlog.rows[0]!.n > 0) return undefined
        }
        const ends = await bus.endOffsets(['wallet_accounts', 'settlements'].map(stateSyncTopic))
        for (const n of list) {
          const offs = await n.db.query<{topic: string; partition: number; next_offset: number}>('SELECT topic, partition, next_offset FROM jil_sync_offsets')
          for (const e of ends) if ((offs.rows.find((o) => o.topic === e.topic && o.partition === e.partition)?.next_offset ?? 0) < e.offset) return undefined
        }
        const sums = await Promise.all(list.map(checksum))
        return new Set(sums).size === 1 ? sums[0] : undefined
      },
      timeoutMs,
    )
  }

  beforeAll(async () => {
    tmp = await tempDir('jil-sync-')
    log = await freshPgDatabase()
    bus = await openPostgresLog(log.url)
    await Promise.all(['CH-ZUG-01', 'SG-SIN-01', 'US-NYC-01'].map((id) => makeNode(id)))
    await Promise.all(Object.values(nodes).map((n) => start(n)))
  })

  afterAll(async () => {
    for (const n of Object.values(nodes)) {
      if (n.proc) {
        n.proc.child.kill('SIGKILL')
        await n.proc.exited
      }
      await n.drop()
    }
    await bus?.close()
    await log?.drop()
    await tmp?.cleanup()
  })

  it('three nodes writing the same rows concurrently end with identical tables; none applies its own events', async () => {
    const [a, b, c] = [nodes['CH-ZUG-01']!, nodes['SG-SIN-01']!, nodes['US-NYC-01']!]
    // Each node changes 20 shared accounts 5 times, concurrently with the others, and settles its own.
    await Promise.all(
      [a, b, c].map(async (n, i) => {
        for (let round = 0; round < 5; round++) {
          await Promise.all([...Array(20).keys()].map((k) => write(n, `acct-${k}`, 1000 * i + round * 20 + k)))
        }
        for (let s = 0; s < 10; s++) await settle(n, `${n.id}-stl-${s}`, `${i}.${s}`)
      }),
    )
    const sum = await converged([a, b, c])
    expect(sum.startsWith('20/')).toBe(true)
    expect(Number((await a.db.query<{n: number}>('SELECT count(*)::bigint AS n FROM settlements')).rows[0]!.n)).toBe(30)

    for (const n of [a, b, c]) {
      const st = await status(n)
      expect(st).toMatchObject({node_id: n.id, transport: 'postgres-log', caught_up: true, lag_s: 0, outbox_backlog: 0, gaps: []})
      // Sources are the other two nodes only: its own events were skipped, not applied.
      const others = [a, b, c].filter((x) => x !== n)
      expect(st.sources.map((s: {source_id: string}) => s.source_id).sort()).toEqual(others.map((x) => x.id).sort())
      for (const o of others) {
        const sent = (await o.db.query<{last_seq: number}>('SELECT last_seq FROM jil_sync_node')).rows[0]!.last_seq
        // 100 account changes + 10 settlements each, every one taken exactly once.
        expect(st.sources.find((s: {source_id: string}) => s.source_id === o.id)).toMatchObject({last_seq: sent, events: 110})
      }
      expect(st.topics.map((t: {topic: string; lag: number}) => [t.topic, t.lag])).toEqual([
        ['jil.state.sync.wallet_accounts', 0],
        ['jil.state.sync.settlements', 0],
      ])
    }
  })

  it('a new node replays the log from the beginning to the same state, then reports caught up', async () => {
    const d = await makeNode('GB-LON-01')
    await start(d)
    const sum = await converged([nodes['CH-ZUG-01']!, d])
    expect(await checksum(nodes['SG-SIN-01']!)).toBe(sum)
    const file = await until('status file caught up', async () => {
      const {readFile} = await import('node:fs/promises')
      const s = JSON.parse(await readFile(join(d.env.JIL_STATE_DIR!, 'sync-status.json'), 'utf8'))
      return s.caught_up === true ? s : undefined
    }, 30_000)
    expect(file).toMatchObject({caught_up: true, lag_s: 0, outbox_backlog: 0})
  })

  it('applies a duplicate delivery once, and converges on out-of-order events from two sources', async () => {
    const all = Object.values(nodes).filter((n) => n.proc)
    const before = await status(nodes['GB-LON-01']!)
    // Two far-away sources change one row; their events arrive newest first, and each is delivered twice
    // (records without an id: what a Kafka producer's retry after a restart looks like).
    const ev = (source: string, seq: number, version: number, ts: string): SyncEnvelope => ({
      event_id: uuidv7(),
      source_id: source,
      topic: stateSyncTopic('wallet_accounts'),
      ts,
      seq,
      schema: 1,
      key: rowKey(['ooo-1']),
      payload: {table: 'wallet_accounts', op: 'upsert', key: ['ooo-1'], version, row: {id: 'ooo-1', owner: source, balance: version * 100, version}},
    })
    const events = [
      ev('AE-ADG-01', 1, 1, '2026-01-01T00:00:00.000001Z'),
      ev('BR-SAO-01', 1, 2, '2026-01-01T00:00:00.000002Z'),
      ev('AE-ADG-01', 2, 3, '2026-01-01T00:00:00.000003Z'),
      ev('BR-SAO-01', 2, 3, '2026-01-01T00:00:00.000003Z'),
    ]
    const rec = (e: SyncEnvelope) => ({topic: e.topic, key: e.key, value: encodeEnvelope(e)})
    await bus.produce([...events].reverse().map(rec))
    await bus.produce(events.map(rec))
    const sum = await converged(all)
    const row = (await nodes['CH-ZUG-01']!.db.query('SELECT owner, balance, version FROM wallet_accounts WHERE id = $1', ['ooo-1'])).rows[0]
    // Equal version and ts: the greater source_id wins, on every node.
    expect(row).toEqual({owner: 'BR-SAO-01', balance: 300, version: 3})
    expect(sum).toMatch(/^21\//)
    const after = await status(nodes['GB-LON-01']!)
    for (const src of ['AE-ADG-01', 'BR-SAO-01']) expect(after.sources.find((s: {source_id: string}) => s.source_id === src)).toMatchObject({last_seq: 2, events: 2})
    // Seq 2 arrived before seq 1 from each source: the gap that opened has closed.
    expect(after.gaps).toEqual([])
    expect(after.sources.filter((s: {source_id: string}) => !['AE-ADG-01', 'BR-SAO-01'].includes(s.source_id))).toEqual(before.sources)
  })

  it('a node killed between apply and commit neither loses nor doubles an event', async () => {
    const e = await makeNode('JP-TYO-01', {JIL_SYNC_BATCH: '25'})
    // The third apply transaction SIGKILLs the process after its writes, before its COMMIT.
    const crashing = await jilServe(['node', 'sync', 'run', '--json'], {...e.env, JIL_SYNC_TEST_KILL_BEFORE_COMMIT: '3'})
    const exit = await Promise.race([crashing.exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 60_000))])
    expect(exit).not.toBe('alive')
    expect(crashing.child.signalCode).toBe('SIGKILL')
    // Two batches committed, the third left nothing: at most 50 events counted, each source's count
    // being exactly the distinct sequences it has delivered (last_seq less what its gaps miss).
    const distinct = async () =>
      (
        await e.db.query<{source_id: string; events: number; seen: number}>(
          `SELECT s.source_id, s.events, s.last_seq - COALESCE((SELECT sum(g.to_seq - g.from_seq + 1) FROM jil_sync_gaps g WHERE g.source_id = s.source_id), 0)::bigint AS seen
             FROM jil_sync_sources s ORDER BY s.source_id`,
        )
      ).rows
    const early = await distinct()
    expect(early.reduce((n, r) => n + r.events, 0)).toBeLessThanOrEqual(50)
    for (const r of early) expect(r.events, r.source_id).toBe(r.seen)
    expect((await e.db.query<{n: number}>('SELECT count(*)::bigint AS n FROM jil_sync_offsets')).rows[0]!.n).toBeLessThanOrEqual(2)

    await start(e)
    const sum = await converged([nodes['CH-ZUG-01']!, e])
    expect(await checksum(nodes['GB-LON-01']!)).toBe(sum)
    const st = await status(e)
    const total = st.sources.reduce((s: number, x: {events: number}) => s + x.events, 0)
    // Every distinct event once: 110 from each of the three writers, 2 from each far-away source.
    expect(total).toBe(3 * 110 + 2 + 2)
    for (const r of await distinct()) expect(r.events, r.source_id).toBe(r.seen)
    expect(st.gaps).toEqual([])
  })

  it('keeps writing through a bus outage: the backlog grows, then drains by itself when the bus is back', async () => {
    // The bus of this node is a database that does not exist yet: every session start fails.
    const name = `jil_t_absent_${Date.now()}`
    const ghost = new URL(log.url)
    ghost.pathname = `/${name}`
    const f = await makeNode('KR-SEL-01', {JIL_SYNC_LOG_URL: ghost.toString()})
    f.proc = await jilServe(['node', 'sync', 'run', '--json'], f.env)
    await until('set up without a bus', async () => ((await f.db.query('SELECT 1 FROM jil_sync_node').catch(() => ({rowCount: 0}))).rowCount ? true : undefined), 30_000)
    for (let k = 0; k < 5; k++) await write(f, `outage-${k}`, k)
    const readStatus = async () => JSON.parse(await (await import('node:fs/promises')).readFile(join(f.env.JIL_STATE_DIR!, 'sync-status.json'), 'utf8'))
    const during = await until('backlog reported', async () => ((await readStatus()).outbox_backlog === 5 ? readStatus() : undefined), 30_000)
    expect(during).toMatchObject({caught_up: false, outbox_backlog: 5})
    expect(during.error).toBeTruthy()
    // The bus comes back: the same process reconnects on its own and sends the backlog, in order.
    const admin = new pg.Client({connectionString: PG_URL})
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    await admin.end()
    try {
      const after = await until('backlog drained', async () => {
        const s = await readStatus()
        return s.outbox_backlog === 0 && s.caught_up ? s : undefined
      }, 90_000)
      expect(after.counters.restarts).toBeGreaterThan(0)
      const back = await openPostgresLog(ghost.toString())
      try {
        const ends = await back.endOffsets([stateSyncTopic('wallet_accounts')])
        expect(ends.reduce((x, e) => x + e.offset, 0)).toBe(5)
      } finally {
        await back.close()
      }
    } finally {
      await stop(f)
      const c = new pg.Client({connectionString: PG_URL})
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.end()
    }
  })
})
