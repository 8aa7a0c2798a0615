// Catch-up replay: 1,000,000 sync events (three sources, 100,000 settlements rows, 1 % delivered
// twice) applied by the node's Applier into a fresh PostgreSQL database at JIL_TEST_DATABASE_URL,
// batch by batch as a replaying node consumes them: parse and check each envelope, de-duplicate by
// event_id, converge per row, upsert the rows, track sources and store the offset, one transaction
// per batch. The events are made and encoded before the clock starts (the bus is not measured: this
// is the node side of a replay). Goal: ≥ 25,000 events/s. Skipped, with a note, without PostgreSQL.
//
//   npm run bench -- sync [--events N] [--batch N] [--rows N] [--no-prefetch] [--via-log [--partitions N]]
//
// --via-log measures the whole path of a node catching up instead: the events in a postgres-log,
// consumed by the sync runner as the daemon runs it (transport read-ahead included).
import {pino} from 'pino'

import {openPg} from '../src/shared/db/pg.js'
import {encodeEnvelope, rowKey, stateSyncTopic, uuidv7, type SyncEnvelope} from '../src/shared/sync-envelope.js'
import {systemClock} from '../src/shared/clock.js'
import {Applier} from '../src/sync/applier.js'
import type {SyncSettings} from '../src/sync/config.js'
import {startSync} from '../src/sync/runner.js'
import type {SyncTable} from '../src/sync/tables.js'
import {openPostgresLog} from '../src/sync/transports/postgres-log.js'
import {migrateNodeDb} from '../src/sync/migrations.js'
import type {ConsumedRecord} from '../src/sync/transport.js'
import {opt} from './lib/args.js'
import {startProfile} from './lib/profile.js'
import pg from 'pg'
import {randomBytes} from 'node:crypto'

const BENCH = 'sync'
const EVENTS = opt('events', 1_000_000)
const BATCH = opt('batch', 5000)
const ROWS = opt('rows', 100_000)
/** --via-log: partitions of the topic (6, as a node creates them by default). */
const PARTITIONS = opt('partitions', 6)
const NO_PREFETCH = process.argv.includes('--no-prefetch')
const VIA_LOG = process.argv.includes('--via-log')
const NODE = 'GB-LON-01'
const SETTLEMENTS: SyncTable = {name: 'settlements', key: ['id'], version: 'version'}
const SOURCES = ['CH-ZUG-01', 'SG-SIN-01', 'US-NYC-01']

function emit(metric: string, value: number, unit: string): void {
  process.stdout.write(JSON.stringify({bench: BENCH, metric, value, unit}) + '\n')
}
const note = (s: string): void => void process.stderr.write(`${BENCH}: ${s}\n`)

const url = process.env.JIL_TEST_DATABASE_URL
if (!url) {
  note('skipped: JIL_TEST_DATABASE_URL is not set (eval "$(scripts/test-services.sh env)")')
  process.exit(0)
}

const name = `jil_bench_${randomBytes(4).toString('hex')}`
const admin = new pg.Client({connectionString: url})
await admin.connect()
await admin.query(`CREATE DATABASE ${name}`)
const u = new URL(url)
u.pathname = `/${name}`
const db = await openPg(u.toString(), {max: 2})
try {
  await db.exec('CREATE TABLE settlements (id text PRIMARY KEY, sender text NOT NULL, amount numeric NOT NULL, zone text NOT NULL, state text NOT NULL, version bigint NOT NULL)')
  await migrateNodeDb(db, NODE)
  const timing = new Map<string, number>()
  if (process.env.JIL_BENCH_TIMING) {
    const orig = db.transaction.bind(db)
    ;(db as {transaction: typeof db.transaction}).transaction = (fn) =>
      orig((tx) =>
        fn({
          exec: (s) => tx.exec(s),
          query: async (sql, params) => {
            const t0 = performance.now()
            try {
              return await tx.query(sql, params)
            } finally {
              const k = sql.trim().slice(0, 40)
              timing.set(k, (timing.get(k) ?? 0) + performance.now() - t0)
            }
          },
        } as typeof tx),
      )
  }
  const applier = new Applier({db, sourceId: NODE, tables: [SETTLEMENTS], log: pino({level: 'silent'})})
  await applier.init()

  note(`making ${EVENTS} events`)
  const topic = stateSyncTopic('settlements')
  const seqs = SOURCES.map(() => 0)
  const versions = new Map<number, number>()
  const records: ConsumedRecord[] = []
  let duplicates = 0
  const t = Date.parse('2026-03-01T00:00:00Z')
  while (records.length < EVENTS) {
    const i = records.length
    if (i > 0 && i % 100 === 0) {
      // 1 % come again (a producer retry after a restart), shortly after the first delivery.
      records.push({...records[i - 1 - (i % 50)]!, offset: i})
      duplicates++
      continue
    }
    const s = i % SOURCES.length
    const row = (i * 7919) % ROWS
    const version = (versions.get(row) ?? 0) + 1
    versions.set(row, version)
    const ts = new Date(t + i).toISOString().replace('Z', '000Z')
    const env: SyncEnvelope = {
      event_id: uuidv7(t + i),
      source_id: SOURCES[s]!,
      topic,
      ts,
      seq: ++seqs[s]!,
      schema: 1,
      key: rowKey([`stl-${row}`]),
      payload: {table: 'settlements', op: 'upsert', key: [`stl-${row}`], version, row: {id: `stl-${row}`, sender: `acct-${row % 997}`, amount: `${row}.${version}`, zone: 'CH/FINMA', state: 'settled', version}},
    }
    records.push({offset: i, key: env.key, value: encodeEnvelope(env), timestamp: new Date(t + i)})
  }

  let applied = 0
  let dups = 0
  let ms: number
  if (VIA_LOG) {
    // The whole path of a node catching up: the records in a postgres-log (6 partitions, as a node
    // creates them; --partitions N), read by the sync runner's consumer (read-ahead, prefetch, apply) as the daemon
    // runs it. Written without ids, so the 1 % sent twice reach the node as over Kafka.
    note('writing them to a postgres-log')
    await admin.query(`CREATE DATABASE ${name}_log`)
    const logUrl = new URL(url)
    logUrl.pathname = `/${name}_log`
    const transport = await openPostgresLog(logUrl.toString())
    try {
      await transport.ensureTopics([{name: topic, partitions: PARTITIONS}])
      for (let i = 0; i < records.length; i += 20_000) await transport.produce(records.slice(i, i + 20_000).map((r) => ({topic, key: r.key, value: r.value})))
      records.length = 0
      note(`replaying through the sync runner, batches of ${BATCH} at most`)
      const settings: SyncSettings = {transport: 'postgres-log', nodeDatabaseUrl: u.toString(), logUrl: logUrl.toString(), seeds: [], tables: [SETTLEMENTS], partitions: PARTITIONS, batch: BATCH}
      const profile = await startProfile()
      const t0 = performance.now()
      const runner = await startSync({settings, nodeId: NODE, clock: systemClock, log: pino({level: 'silent'}), transport})
      try {
        for (;;) {
          const c = runner.snapshot().counters
          if (c.applied + c.duplicates >= EVENTS) break
          if (c.restarts > 0) throw new Error(`the sync session failed: ${runner.snapshot().error}`)
          await new Promise((r) => setTimeout(r, 20))
        }
        ms = performance.now() - t0
        await profile.stop()
        ;({applied, duplicates: dups} = runner.snapshot().counters)
      } finally {
        await runner.stop()
      }
    } finally {
      await transport.close()
      await admin.query(`DROP DATABASE IF EXISTS ${name}_log WITH (FORCE)`)
    }
  } else {
    note(`replaying in batches of ${BATCH}`)
    const profile = await startProfile()
    const t0 = performance.now()
    // As a consumer reads: the transport hands the next batch over (onFetched → prefetch) as soon as
    // it has read it, while the one before it is being applied.
    const batchAt = (i: number) => ({topic, partition: 0, records: records.slice(i, i + BATCH)})
    let batch = batchAt(0)
    for (let i = 0; i < records.length; i += BATCH) {
      const ahead = i + BATCH < records.length ? batchAt(i + BATCH) : undefined
      if (ahead && !NO_PREFETCH) applier.prefetch(ahead)
      const r = await applier.apply(batch)
      if (ahead) batch = ahead
      applied += r.applied
      dups += r.duplicates
    }
    ms = performance.now() - t0
    await profile.stop()
  }
  if (dups !== duplicates || applied !== EVENTS - duplicates) throw new Error(`de-duplication is off: applied ${applied}, duplicates ${dups} (expected ${EVENTS - duplicates}, ${duplicates})`)
  const {rows} = await db.query<{n: number}>('SELECT count(*)::bigint AS n FROM settlements')
  note(`${applied} applied, ${dups} duplicates dropped, ${rows[0]!.n} rows, ${(ms / 1000).toFixed(1)} s`)
  for (const [k, v] of timing) note(`${Math.round(v)} ms  ${k}`)
  emit('replay_rate', Math.round((EVENTS / ms) * 1000), '1/s')
  emit('replay_time', Math.round(ms), 'ms')
  emit('events', EVENTS, 'count')
  emit('duplicates_dropped', dups, 'count')
} finally {
  await db.close()
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.end()
}
