// Catch-up replay: 1,000,000 sync events (three sources, 100,000 settlements rows, 1 % delivered
// twice) applied by the node's Applier into a fresh PostgreSQL database at JIL_TEST_DATABASE_URL,
// batch by batch as a replaying node consumes them: parse and check each envelope, de-duplicate by
// event_id, converge per row, upsert the rows, track sources and store the offset, one transaction
// per batch. The events are made and encoded before the clock starts (the bus is not measured: this
// is the node side of a replay). Goal: ≥ 25,000 events/s. Skipped, with a note, without PostgreSQL.
//
//   npm run bench -- sync [--events N] [--batch N] [--rows N] [--no-prefetch]
import {pino} from 'pino'

import {openPg} from '../src/shared/db/pg.js'
import {encodeEnvelope, rowKey, stateSyncTopic, uuidv7, type SyncEnvelope} from '../src/shared/sync-envelope.js'
import {Applier} from '../src/sync/applier.js'
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
const NO_PREFETCH = process.argv.includes('--no-prefetch')
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
  await migrateNodeDb(db, 'GB-LON-01')
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
  const applier = new Applier({db, sourceId: 'GB-LON-01', tables: [{name: 'settlements', key: ['id'], version: 'version'}], log: pino({level: 'silent'})})
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

  note(`replaying in batches of ${BATCH}`)
  let applied = 0
  let dups = 0
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
  const ms = performance.now() - t0
  await profile.stop()
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
