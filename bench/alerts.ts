// One alert evaluation over a realistic fleet (bench/alerts/fleet.ts: 100,000 nodes by default, five
// services each, a few percent with each trouble). In memory: the rules alone over a snapshot
// (goal ≤ 250 ms). On PostgreSQL (JIL_TEST_DATABASE_URL; a database created for the run and dropped
// after; skipped with a note when unset): the evaluator's whole tick, as HQ runs it — the snapshot's
// set-wise queries, the rules, and the transaction that stores the alerts (goal ≤ 1 s), first when
// every alert is new, then in the steady state where they are all refreshed; with the snapshot's
// load time on its own.
//
//   eval "$(scripts/test-services.sh env)" && npm run bench -- alerts [--nodes N] [--runs N] [--keep]
//
// --keep leaves the database in place (its URL on stderr) to look at the queries with EXPLAIN.
import {randomBytes} from 'node:crypto'

import {AlertEvaluator} from '../src/hq/alerts/evaluator.js'
import {DEFAULT_ALERT_CONFIG, evaluate} from '../src/hq/alerts/rules.js'
import {loadSnapshot} from '../src/hq/alerts/snapshot.js'
import {HQ_MIGRATIONS} from '../src/hq/store/migrations/index.js'
import {StackService} from '../src/hq/stack/service.js'
import {ManualClock} from '../src/shared/clock.js'
import {migrate} from '../src/shared/db/migrate.js'
import {openPg, redactUrl} from '../src/shared/db/pg.js'
import type {AuditLedger} from '../src/hq/audit/ledger.js'
import {fillDb, makeFleet, toSnapshot} from './alerts/fleet.js'
import {opt} from './lib/args.js'

const BENCH = 'alerts'
const NODES = opt('nodes', 100_000)
const RUNS = opt('runs', 9)
const KEEP = process.argv.includes('--keep')

function emit(metric: string, value: number, unit: string): void {
  process.stdout.write(JSON.stringify({bench: BENCH, metric, value: Math.round(value * 10) / 10, unit}) + '\n')
}
const note = (s: string): void => void process.stderr.write(`${BENCH}: ${s}\n`)
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const max = (xs: number[]): number => Math.max(...xs)

async function main(): Promise<void> {
  const now = new Date('2026-11-28T10:00:00Z')
  note(`generating a fleet of ${NODES} nodes`)
  const fleet = makeFleet(NODES, now)
  const expected = Object.values(fleet.troubles).reduce((a, b) => a + b, 0)
  note(`troubles: ${JSON.stringify(fleet.troubles)} (${expected} alerts expected)`)

  // In memory: the rules over the snapshot.
  const snapshot = toSnapshot(fleet)
  const times: number[] = []
  let found = 0
  for (let i = 0; i < RUNS + 2; i++) {
    const t0 = performance.now()
    found = evaluate(snapshot, DEFAULT_ALERT_CONFIG, now).length
    if (i >= 2) times.push(performance.now() - t0) // two warm-up runs
  }
  if (found !== expected) note(`the rules found ${found}, the generator planted ${expected}`)
  emit('memory_evaluate_median', median(times), 'ms')
  emit('memory_evaluate_max', max(times), 'ms')
  emit('findings', found, 'alerts')

  const url = process.env.JIL_TEST_DATABASE_URL
  if (!url) {
    note('JIL_TEST_DATABASE_URL is not set: the PostgreSQL figures are skipped (eval "$(scripts/test-services.sh env)")')
    return
  }
  const name = `jil_bench_alerts_${randomBytes(4).toString('hex')}`
  const admin = await openPg(url)
  await admin.exec(`CREATE DATABASE ${name}`)
  const u = new URL(url)
  u.pathname = `/${name}`
  note(`PostgreSQL at ${redactUrl(u.toString())}`)
  const db = await openPg(u.toString())
  try {
    await migrate(db, HQ_MIGRATIONS)
    const t0 = performance.now()
    await fillDb(db, fleet, (s) => note(s))
    note(`fleet written in ${Math.round(performance.now() - t0)} ms`)

    // StackService.view reads the stacks only: nothing is signed or audited here.
    const stacks = new StackService(db, () => {
      throw new Error('the bench signs nothing')
    }, '', undefined as unknown as AuditLedger, new ManualClock(now))
    const clock = new ManualClock(now)
    const evaluator = new AlertEvaluator(db, stacks, clock)
    try {
      const first = await evaluator.tick()
      if (first.opened !== expected) note(`the first evaluation opened ${first.opened}, the generator planted ${expected}`)
      emit('pg_first_tick', first.ms, 'ms')
      emit('pg_first_opened', first.opened, 'alerts')
      const ticks: number[] = []
      const loads: number[] = []
      for (let i = 0; i < RUNS; i++) {
        clock.advance(1000)
        const l0 = performance.now()
        await loadSnapshot(db, stacks, clock.now(), DEFAULT_ALERT_CONFIG)
        loads.push(performance.now() - l0)
        const r = await evaluator.tick()
        ticks.push(r.ms)
      }
      emit('pg_tick_median', median(ticks), 'ms')
      emit('pg_tick_max', max(ticks), 'ms')
      emit('pg_snapshot_load_median', median(loads), 'ms')
    } finally {
      await evaluator.stop()
    }
  } finally {
    await db.close()
    if (KEEP) note(`kept the database: ${redactUrl(u.toString())}`)
    else await admin.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.close()
  }
}

await main()
