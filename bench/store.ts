// Store throughput through the project's own Db adapters: single-row inserts (one statement and
// commit each; and the same inside one transaction) and 1,000-row batched upserts (one
// INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE per batch; and the same as a multi-row
// VALUES list), PGlite in a temporary directory vs PostgreSQL at JIL_TEST_DATABASE_URL (skipped,
// with a note, when unset; eval "$(scripts/test-services.sh env)" sets it). PostgreSQL runs in a
// fresh database created for the bench and dropped afterwards.
//
//   npm run bench -- store [--single N] [--batches N]
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {openPg, redactUrl} from '../src/shared/db/pg.js'
import {openPglite} from '../src/shared/db/pglite.js'
import type {Db, Queryable} from '../src/shared/db/types.js'
import {opt} from './lib/args.js'

const BENCH = 'store'
const SINGLE = opt('single', 2000)
const BATCHES = opt('batches', 20)
const BATCH = 1000
/** Keys repeat every KEYSPACE rows: the first half of the batches insert, the second half update. */
const KEYSPACE = Math.max(BATCH, (BATCHES * BATCH) / 2)

function emit(metric: string, value: number, unit: string): void {
  process.stdout.write(JSON.stringify({bench: BENCH, metric, value, unit}) + '\n')
}
const note = (s: string): void => void process.stderr.write(`${BENCH}: ${s}\n`)
const now = (): number => performance.now()
const rate = (rows: number, ms: number): number => Math.round((rows / ms) * 1000)

const DDL = `
  DROP TABLE IF EXISTS bench_kv;
  CREATE TABLE bench_kv (id text PRIMARY KEY, v jsonb NOT NULL, n int NOT NULL);
`

const value = (i: number): string => JSON.stringify({i, zone: 'CH/FINMA', ok: i % 2 === 0, tags: ['a', 'b']})

async function singleInserts(q: Queryable, prefix: string, count: number): Promise<number> {
  const t0 = now()
  for (let i = 0; i < count; i++) {
    await q.query('INSERT INTO bench_kv (id, v, n) VALUES ($1, $2::jsonb, $3)', [`${prefix}${i}`, value(i), i])
  }
  return now() - t0
}

function batchRows(b: number): {ids: string[]; vs: string[]; ns: number[]} {
  const ids: string[] = []
  const vs: string[] = []
  const ns: number[] = []
  for (let i = 0; i < BATCH; i++) {
    const k = (b * BATCH + i) % KEYSPACE
    ids.push(`k${k}`)
    vs.push(value(k))
    ns.push(1)
  }
  return {ids, vs, ns}
}

const UPSERT_UNNEST = `
  INSERT INTO bench_kv (id, v, n)
  SELECT id, v::jsonb, n FROM unnest($1::text[], $2::text[], $3::int[]) AS t(id, v, n)
  ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, n = bench_kv.n + EXCLUDED.n`

function upsertValues(rows: number): string {
  const tuples: string[] = []
  for (let i = 0; i < rows; i++) tuples.push(`($${3 * i + 1}, $${3 * i + 2}::jsonb, $${3 * i + 3}::int)`)
  return `INSERT INTO bench_kv (id, v, n) VALUES ${tuples.join(', ')}
    ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, n = bench_kv.n + EXCLUDED.n`
}

async function batchedUpserts(db: Db, style: 'unnest' | 'values'): Promise<number> {
  await db.exec('TRUNCATE bench_kv')
  const valuesSql = upsertValues(BATCH)
  const batches = Array.from({length: BATCHES}, (_, b) => batchRows(b))
  const t0 = now()
  for (const {ids, vs, ns} of batches) {
    if (style === 'unnest') {
      await db.query(UPSERT_UNNEST, [ids, vs, ns])
    } else {
      const params: unknown[] = []
      for (let i = 0; i < ids.length; i++) params.push(ids[i], vs[i], ns[i])
      await db.query(valuesSql, params)
    }
  }
  const ms = now() - t0
  // Every key written BATCHES*BATCH/KEYSPACE times: the upserts must have merged, not duplicated.
  const {rows} = await db.query<{c: number; s: number}>('SELECT count(*)::int AS c, sum(n)::int AS s FROM bench_kv')
  if (rows[0]?.c !== Math.min(KEYSPACE, BATCHES * BATCH) || rows[0]?.s !== BATCHES * BATCH) {
    throw new Error(`upsert check failed: ${JSON.stringify(rows[0])}`)
  }
  return ms
}

async function run(label: string, db: Db): Promise<void> {
  await db.exec(DDL)
  await singleInserts(db, 'warm', 50)
  await db.exec('TRUNCATE bench_kv')

  let ms = await singleInserts(db, 's', SINGLE)
  emit(`${label} single-row insert (autocommit)`, rate(SINGLE, ms), 'rows/s')
  emit(`${label} single-row insert (autocommit) latency mean`, Math.round((ms / SINGLE) * 1000) / 1000, 'ms')

  await db.exec('TRUNCATE bench_kv')
  ms = await db.transaction((tx) => singleInserts(tx, 't', SINGLE))
  emit(`${label} single-row insert (one transaction)`, rate(SINGLE, ms), 'rows/s')

  for (const style of ['unnest', 'values'] as const) {
    ms = await batchedUpserts(db, style)
    emit(`${label} 1000-row batched upsert (${style})`, rate(BATCHES * BATCH, ms), 'rows/s')
    emit(`${label} 1000-row batched upsert (${style}) per batch`, Math.round((ms / BATCHES) * 10) / 10, 'ms')
  }
}

note(`${SINGLE} single-row inserts, ${BATCHES} batches of ${BATCH} rows (keys repeat every ${KEYSPACE})`)

// PGlite, in a fresh data directory (initdb runs on create: that is timed separately).
{
  const dir = mkdtempSync(join(tmpdir(), 'jil-bench-pglite-'))
  try {
    const t0 = now()
    const db = await openPglite(join(dir, 'db'))
    emit('pglite create (initdb) time', Math.round(now() - t0), 'ms')
    try {
      await run('pglite', db)
    } finally {
      await db.close()
    }
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
}

// PostgreSQL.
const url = process.env.JIL_TEST_DATABASE_URL
if (!url) {
  note('JIL_TEST_DATABASE_URL is not set: PostgreSQL skipped (eval "$(scripts/test-services.sh env)" first)')
} else {
  const name = `jil_bench_${randomBytes(4).toString('hex')}`
  const admin = await openPg(url, {max: 1, applicationName: 'jil-bench'})
  let created = false
  try {
    await admin.exec(`CREATE DATABASE ${name}`)
    created = true
  } catch (err) {
    note(`cannot create a database (${(err as Error).message}); using ${redactUrl(url)} itself`)
  }
  try {
    const u = new URL(url)
    if (created) u.pathname = `/${name}`
    const db = await openPg(u.toString(), {applicationName: 'jil-bench'})
    try {
      const {rows} = await db.query<{v: string; fsync: string; sc: string}>(
        `SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc`,
      )
      note(`PostgreSQL ${rows[0]?.v} at ${redactUrl(u.toString())} (fsync=${rows[0]?.fsync}, synchronous_commit=${rows[0]?.sc})`)
      await run('postgres', db)
      if (!created) await db.exec('DROP TABLE IF EXISTS bench_kv')
    } finally {
      await db.close()
    }
  } finally {
    if (created) await admin.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {})
    await admin.close()
  }
}
