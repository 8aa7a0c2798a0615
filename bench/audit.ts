// Audit ledger throughput:
//  - appends/s: concurrent HQ actions (one audited action per transaction, C connections) until the
//    sequencer has placed them all, on PostgreSQL (JIL_TEST_DATABASE_URL) and on PGlite;
//  - sequencer alone: pending rows moved into the chained log per second;
//  - full verification of 1,000,000 entries from an NDJSON export (the `jil audit verify` path:
//    parse, chain, hash, Merkle roots, checkpoint signatures);
//  - inclusion proofs verified per second in a 1,000,000-entry tree.
//
//   npm run bench -- audit [--appends N] [--conc C] [--verify N]
import {generateKeyPairSync, sign} from 'node:crypto'
import {existsSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'

import pg from 'pg'

import {AuditLedger} from '../src/hq/audit/ledger.js'
import {HQ_MIGRATIONS} from '../src/hq/store/migrations/index.js'
import {auditOrigin, checkpointMessage, entryHash, ZERO_HASH, type AuditEntry} from '../src/shared/audit.js'
import {checkpointKeyFromPem, EXPORT_FORMAT, verifyExportLines} from '../src/shared/audit-verify.js'
import {systemClock} from '../src/shared/clock.js'
import {migrate} from '../src/shared/db/migrate.js'
import {openPg} from '../src/shared/db/pg.js'
import {openPglite} from '../src/shared/db/pglite.js'
import {LOCKS, type Db} from '../src/shared/db/types.js'
import {leafHash, MerkleTree, verifyInclusion} from '../src/shared/merkle.js'
import {fileSigner} from '../src/shared/signing.js'

const argv = process.argv.slice(2)
const opt = (name: string, d: number) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? Number(argv[i + 1]) : d
}
const APPENDS = opt('appends', 20_000)
const CONC = opt('conc', 16)
const VERIFY_N = opt('verify', 1_000_000)
/** --only verify: skip the database parts. */
const ONLY = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined
const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: 'audit', metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`audit: ${s}\n`)
const CA = 'sha256:' + '0'.repeat(64)
const {privateKey, publicKey} = generateKeyPairSync('ed25519')
const privatePem = privateKey.export({type: 'pkcs8', format: 'pem'}) as string
const publicPem = publicKey.export({type: 'spki', format: 'pem'}) as string

async function appendBench(label: string, db: Db, total: number, conc: number, group = 1): Promise<void> {
  const ledger = new AuditLedger(db, systemClock, await fileSigner(privatePem), CA, 5000)
  const lock = (await db.tryAdvisoryLock(LOCKS.auditSequencer))!
  let stop = false
  // The sequencer as HQ runs it: back to back while there is work.
  const sequencer = (async () => {
    let placed = 0
    while (!stop || placed < total) {
      const n = await ledger.sequence(lock)
      placed += n
      if (n === 0) await new Promise((r) => setTimeout(r, 2))
    }
  })()
  const t0 = performance.now()
  let next = 0
  await Promise.all(
    Array.from({length: conc}, async () => {
      while (next < total) {
        const first = next
        next += group
        const batch = Array.from({length: group}, (_, k) => first + k).map((i) => ({actor: {type: 'user' as const, id: 'ci-pipeline', role: 'ci-pipeline'}, action: 'image.push' as const, subject: `jil/svc-${i % 190}`, details: {i, version: `v95.${i}`}}))
        await db.transaction((tx) => ledger.appendMany(tx, batch))
      }
    }),
  )
  const tAppended = performance.now()
  stop = true
  await sequencer
  const tDone = performance.now()
  await lock.release()
  const what = `${conc} connections, ${group} per commit`
  emit(`${label} appends committed (${what})`, Math.round(total / ((tAppended - t0) / 1000)), '1/s')
  emit(`${label} appends until sequenced (${what})`, Math.round(total / ((tDone - t0) / 1000)), '1/s')
  emit(`${label} sequencer lag after last commit (${what})`, Math.round(tDone - tAppended), 'ms')
  if (group > 1) return

  // Sequencer alone: a backlog of pending rows moved into the log.
  await db.query(
    `INSERT INTO audit_pending (time, actor, action, subject, details)
     SELECT now(), '{"type":"hq","id":"hq"}', 'node.command', 'n-' || g, jsonb_build_object('i', g) FROM generate_series(1, $1) g`,
    [total],
  )
  const lock2 = (await db.tryAdvisoryLock(LOCKS.auditSequencer))!
  const s0 = performance.now()
  const moved = await ledger.sequence(lock2)
  const s1 = performance.now()
  await lock2.release()
  emit(`${label} sequencer throughput`, Math.round(moved / ((s1 - s0) / 1000)), '1/s')
  const c0 = performance.now()
  await ledger.checkpoint()
  emit(`${label} checkpoint of ${2 * total} entries (cold tree)`, Math.round(performance.now() - c0), 'ms')
}

function verifyBench(n: number): Promise<void> {
  note(`building a ${n}-entry export in memory`)
  const lines: string[] = [JSON.stringify({type: 'header', format: EXPORT_FORMAT, origin: auditOrigin(CA)})]
  const tree = new MerkleTree()
  const entries: string[] = []
  let prev: Uint8Array = ZERO_HASH
  for (let seq = 1; seq <= n; seq++) {
    const e: AuditEntry = {
      seq,
      time: new Date(1_795_000_000_000 + seq * 10).toISOString(),
      actor: seq % 3 ? {type: 'user', id: 'ci-pipeline', role: 'ci-pipeline'} : {type: 'node', id: 'CH-ZUG-01'},
      action: seq % 3 ? 'image.push' : 'node.upgrade',
      subject: `jil/settlement-api@sha256:${(seq % 997).toString(16).padStart(64, '0')}`,
      details: seq % 3 ? {version: `v95.${seq % 100}`, commit: '9f2c1e0', track: 'devnet'} : {from_version: 'v95.2', to_version: 'v95.3', strategy: 'rolling'},
      prev_hash: Buffer.from(prev).toString('hex'),
      hash: '',
    }
    const h = entryHash(prev, e)
    e.hash = h.toString('hex')
    prev = h
    tree.append(leafHash(h))
    entries.push(JSON.stringify({type: 'entry', ...e}))
  }
  // A checkpoint every 10,000 entries, like one a minute at ~170 actions/s.
  for (let size = 10_000; size <= n; size += 10_000) {
    const body = {origin: auditOrigin(CA), tree_size: size, root_hash: Buffer.from(tree.root(size)).toString('hex'), time: '2026-11-27T12:00:00.000Z'}
    lines.push(JSON.stringify({type: 'checkpoint', ...body, key_id: checkpointKeyFromPem(publicPem).keyId, signature: sign(null, checkpointMessage(body), privateKey).toString('base64')}))
  }
  for (const e of entries) lines.push(e)
  return (async () => {
    async function* gen() {
      yield* lines
    }
    // The CLI's path: hashing on worker threads (the built dist/workers/audit-hash.js), and all on one thread.
    const workerUrl = pathToFileURL(join(process.cwd(), 'dist/workers/audit-hash.js'))
    if (!existsSync(workerUrl)) note('dist/workers/audit-hash.js is missing: run npm run build first')
    for (const workers of existsSync(workerUrl) ? [2, 0] : [0]) {
      const t0 = performance.now()
      const report = await verifyExportLines(gen(), checkpointKeyFromPem(publicPem), {workerUrl, workers})
      const ms = performance.now() - t0
      if (!report.ok) throw new Error(`verification failed: ${JSON.stringify(report.problem)}`)
      emit(`full verification of ${n} entries (${report.checkpoints} checkpoints, ${workers} worker threads)`, Math.round(ms) / 1000, 's')
    }

    const samples = 50_000
    const proofs = Array.from({length: samples}, (_, i) => {
      const index = (i * 7919) % n
      return {index, leaf: tree.leaf(index), proof: tree.inclusionProof(index, n)}
    })
    const root = tree.root(n)
    const p0 = performance.now()
    let okCount = 0
    for (const p of proofs) if (verifyInclusion(p.leaf, p.index, n, p.proof, root)) okCount++
    const pms = performance.now() - p0
    if (okCount !== samples) throw new Error('a proof failed')
    emit(`inclusion proofs verified (tree of ${n})`, Math.round(samples / (pms / 1000)), '1/s')
  })()
}

const url = process.env.JIL_TEST_DATABASE_URL
if (ONLY === 'verify') {
  // database parts skipped
} else if (url) {
  const name = `jil_bench_audit_${process.pid}`
  const admin = new pg.Client({connectionString: url})
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  const u = new URL(url)
  u.pathname = `/${name}`
  const db = await openPg(u.toString(), {max: CONC + 4})
  try {
    await migrate(db, HQ_MIGRATIONS)
    await appendBench('postgresql', db, APPENDS, CONC)
    await appendBench('postgresql', db, APPENDS * 5, CONC, 20)
  } finally {
    await db.close()
    await admin.query(`DROP DATABASE ${name} WITH (FORCE)`)
    await admin.end()
  }
} else {
  note('JIL_TEST_DATABASE_URL is not set: skipping PostgreSQL (eval "$(scripts/test-services.sh env)")')
}

if (ONLY !== 'verify') {
  const dir = mkdtempSync(join(tmpdir(), 'jil-bench-audit-'))
  try {
    const db = await openPglite(dir)
    await migrate(db, HQ_MIGRATIONS)
    await appendBench('pglite', db, Math.min(APPENDS, 5000), 1)
    await db.close()
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
}

await verifyBench(VERIFY_N)
