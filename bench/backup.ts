// `jil hq backup` / `jil hq restore` at fleet scale: an HQ made by `initHq`, then seeded with 1,000
// nodes (each: admission, join token, certificate, latest heartbeat of ~1.5 KB, agent report) and
// 10,000 audit entries (sequenced and checkpointed as HQ does it). Then, for PGlite (HQ's data dir)
// and for PostgreSQL at JIL_TEST_DATABASE_URL (a database created for the run and dropped after;
// skipped with a note when unset): backup time and archive size, in the clear and encrypted; restore
// time of the encrypted archive into a fresh data dir (PGlite: including its initdb) or a fresh
// database (PostgreSQL), audit verification included.
//
//   npm run bench -- backup [--nodes N] [--entries N]
import {mkdtempSync, rmSync} from 'node:fs'
import {join} from 'node:path'
import {tmpdir} from 'node:os'

import pg from 'pg'

import {AuditLedger} from '../src/hq/audit/ledger.js'
import {backupHq} from '../src/hq/backup/backup.js'
import {restoreHq} from '../src/hq/backup/restore.js'
import {hqPath, readHqConfig, readHqKeys} from '../src/hq/datadir.js'
import {initHq} from '../src/hq/init.js'
import {openHqDb} from '../src/hq/store/index.js'
import {systemClock} from '../src/shared/clock.js'
import {ZONES} from '../src/shared/zones.js'
import {fileSigner} from '../src/shared/signing.js'
import {opt} from './lib/args.js'

const BENCH = 'backup'
const NODES = opt('nodes', 1000)
const ENTRIES = opt('entries', 10_000)
const PASSPHRASE = 'bench passphrase'
const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: BENCH, metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`${BENCH}: ${s}\n`)
const ms = (t0: number) => Math.round(performance.now() - t0)


function heartbeat(id: string, i: number): string {
  return JSON.stringify({
    node_id: id,
    time: new Date().toISOString(),
    agent_version: '0.1.0',
    run_mode: 'running',
    desired_sequence: 3,
    containers: {total: 5, running: 5, healthy: 5, unhealthy: 0, exited: 0, restarting: 0, other: 0},
    services: ['api', 'ledger', 'settlement', 'wallet', 'gateway'].map((name, k) => ({name, critical: k < 3, state: 'running', health: 'healthy', digest: `sha256:${((i * 7 + k) % 4096).toString(16).padStart(64, '0')}`, version: `v95.${k}`})),
    system: {cpu_percent: 12.5, load1: 0.4, memory_used_bytes: 3.1e9, memory_total_bytes: 8e9, disk_used_bytes: 4.2e10, disk_total_bytes: 1e11, disk_percent: 42},
    cert: {serial: i.toString(16), not_after: new Date(Date.now() + 20 * 86_400_000).toISOString()},
    agents: {health: {at: new Date().toISOString(), ok: true}},
    sync: {lag_s: 0.4, caught_up: true},
  })
}

async function seed(dataDir: string): Promise<void> {
  const config = await readHqConfig(dataDir)
  const keys = await readHqKeys(dataDir)
  const db = await openHqDb(config.database_url ? {databaseUrl: config.database_url} : {pgliteDir: hqPath(dataDir, 'db')})
  try {
    const ids = Array.from({length: NODES}, (_, i) => `${ZONES[i % ZONES.length]!.slice(0, 2)}-BN${Math.floor(i / 100)}-${String(i % 100).padStart(2, '0')}`)
    await db.transaction(async (tx) => {
      await tx.query("INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ('Bench Ops', 'approved', now(), now())")
      await tx.query(
        `INSERT INTO nodes (id, zone, operator, track, status, hardware, created_at, joined_at)
         SELECT id, zone, 'Bench Ops', 'mainnet', 'active', '{"cpu_cores": 8, "memory_bytes": 17179869184}'::jsonb, now(), now()
           FROM unnest($1::text[], $2::text[]) AS x(id, zone)`,
        [ids, ids.map((_, i) => ZONES[i % ZONES.length])],
      )
      await tx.query(
        `INSERT INTO join_tokens (token_hash, node_id, created_by, created_at, expires_at, used_at)
         SELECT encode(sha256(id::bytea), 'hex'), id, 'olga', now(), now() + interval '1 day', now() FROM unnest($1::text[]) AS id`,
        [ids],
      )
      await tx.query(
        `INSERT INTO certificates (serial, kind, subject, fingerprint, not_before, not_after)
         SELECT lpad(to_hex(1000 + n), 16, '0'), 'node', id, 'sha256:' || encode(sha256(('cert' || id)::bytea), 'hex'), now(), now() + interval '30 days'
           FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n)`,
        [ids],
      )
      await tx.query('INSERT INTO node_heartbeats (node_id, received_at, body) SELECT id, now(), b::jsonb FROM unnest($1::text[], $2::text[]) AS x(id, b)', [ids, ids.map((id, i) => heartbeat(id, i))])
      await tx.query(
        `INSERT INTO node_reports (node_id, agent, received_at, body)
         SELECT id, 'security', now(), '{"findings": [{"id": "ssh-root-login", "severity": "warning"}], "ok": true}'::jsonb FROM unnest($1::text[]) AS id`,
        [ids],
      )
    })
    const ledger = new AuditLedger(db, systemClock, await fileSigner(keys.checkpointKey), config.ca_fingerprint, 5000)
    for (let done = 0; done < ENTRIES; done += 1000) {
      const batch = Array.from({length: Math.min(1000, ENTRIES - done)}, (_, k) => {
        const i = done + k
        return {actor: {type: 'user' as const, id: 'olga', role: 'ops-lead'}, action: 'node.command' as const, subject: ids[i % ids.length]!, details: {command: 'refresh', command_id: `cmd_${String(i).padStart(20, '0')}`}}
      })
      await db.transaction((tx) => ledger.appendMany(tx, batch))
    }
    await ledger.sequenceNow()
    await ledger.checkpoint()
  } finally {
    await db.close()
  }
}

async function run(label: string, databaseUrl: string | undefined, restoreUrl: string | undefined): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'jil-bench-backup-'))
  try {
    const dataDir = join(dir, 'hq')
    await initHq({dataDir, hostnames: [], force: false, hqUrl: 'https://127.0.0.1:8443', clock: systemClock, ...(databaseUrl ? {databaseUrl} : {})})
    let t0 = performance.now()
    await seed(dataDir)
    note(`${label}: seeded ${NODES} nodes and ${ENTRIES} audit entries in ${ms(t0)} ms`)
    for (const encrypted of [false, true]) {
      const out = join(dir, encrypted ? 'hq.enc.jilbak' : 'hq.jilbak')
      t0 = performance.now()
      const r = await backupHq({dataDir, out, passphrase: encrypted ? PASSPHRASE : undefined, clock: systemClock, version: 'bench'})
      const took = ms(t0)
      const what = `${label}, ${NODES} nodes, ${r.audit_entries} audit entries${encrypted ? ', encrypted' : ''}`
      emit(`backup time (${what})`, took, 'ms')
      emit(`archive size (${what})`, r.bytes, 'B')
    }
    t0 = performance.now()
    const r = await restoreHq({file: join(dir, 'hq.enc.jilbak'), dataDir: join(dir, 'restored'), databaseUrl: restoreUrl, passphrase: PASSPHRASE, clock: systemClock, progress: process.env.JIL_BENCH_PROGRESS ? (l) => note(`${ms(t0)} ms: ${l}`) : undefined})
    emit(`restore time (${label}${restoreUrl ? '' : ', incl. initdb'}, ${NODES} nodes, ${r.audit_entries} audit entries verified, encrypted archive)`, ms(t0), 'ms')
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
}

await run('pglite', undefined, undefined)

const url = process.env.JIL_TEST_DATABASE_URL
if (url) {
  const names = [`jil_bench_backup_${process.pid}`, `jil_bench_restore_${process.pid}`]
  const admin = new pg.Client({connectionString: url})
  await admin.connect()
  try {
    for (const n of names) await admin.query(`CREATE DATABASE ${n}`)
    const at = (n: string) => {
      const u = new URL(url)
      u.pathname = `/${n}`
      return u.toString()
    }
    await run('postgresql', at(names[0]!), at(names[1]!))
  } finally {
    for (const n of names) await admin.query(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`)
    await admin.end()
  }
} else {
  note('JIL_TEST_DATABASE_URL is not set: skipping PostgreSQL (eval "$(scripts/test-services.sh env)")')
}
