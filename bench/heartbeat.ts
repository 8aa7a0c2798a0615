// Heartbeat ingest at fleet scale (issue 7): a load generator in its own child process simulates
// N nodes (default 2,000), each with its own client certificate and its own keep-alive connection
// (an undici Client, one connection), posting realistic heartbeats at a fixed offered rate, open
// loop (sends are scheduled at the rate, never waiting for answers), to a real `jil hq serve` child
// on the real PostgreSQL at JIL_TEST_DATABASE_URL (a fresh database, dropped afterwards). Per step
// of offered rate: sustained heartbeats/s, p50/p99 latency (from each send's scheduled time, so a
// generator or server that falls behind shows as latency), errors, and the CPU of the generator and
// of HQ (all three share the machine's cores with PostgreSQL).
//
//   npm run build && eval "$(scripts/test-services.sh env)" && npm run bench -- heartbeat \
//     [--nodes 2000] [--steps 1000,2000,3000,4000,5000] [--secs 20]
//   JIL_BENCH_PROF=DIR writes HQ's CPU profile (node --cpu-prof) into DIR.
import {generateKeyPairSync, randomBytes} from 'node:crypto'
import {fork, spawn, type ChildProcess} from 'node:child_process'
import {readdirSync, readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {cpus, tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

const BENCH = 'heartbeat'
const argv = process.argv.slice(2)
const opt = (n: string, d: string) => (argv.includes(`--${n}`) ? argv[argv.indexOf(`--${n}`) + 1]! : d)
const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: BENCH, metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`${BENCH}: ${s}\n`)
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

/** Busy CPU seconds of the whole machine (all cores): what else ran shows as the remainder. */
function machineCpuSeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) / 100
}

/** CPU seconds of every PostgreSQL process (the server's backends are separate processes). */
function postgresCpuSeconds(): number {
  let total = 0
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/stat`, 'utf8').includes('(postgres)')) total += cpuSeconds(Number(pid))
    } catch {
      // gone
    }
  }
  return total
}

type NodeCred = {id: string; zone: string; cert: string; key: string}
type StepResult = {rate: number; secs: number; scheduled: number; sent: number; ok: number; errors: number; errorCodes: Record<string, number>; p50: number; p99: number; max: number; sustained: number; cpuPercent: number; sendLagMs: number}

if (argv[0] === '--generator') await generator(argv[1]!)
else await main()

// ---------------------------------------------------------------------------------------------
// The bench: a fresh database, an HQ, 2,000 node identities, the generator, the steps.

async function main(): Promise<void> {
  const NODES = Number(opt('nodes', '2000'))
  const STEPS = opt('steps', '1000,2000,3000,4000,5000').split(',').map(Number)
  const SECS = Number(opt('secs', '20'))
  const url = process.env.JIL_TEST_DATABASE_URL
  if (!url) {
    note('JIL_TEST_DATABASE_URL is not set: run eval "$(scripts/test-services.sh env)" first')
    process.exit(2)
  }
  const {openPg, redactUrl} = await import('../src/shared/db/pg.js')
  const {initHq} = await import('../src/hq/init.js')
  const {readHqKeys} = await import('../src/hq/datadir.js')
  const {CertificateAuthority} = await import('../src/hq/ca/ca.js')
  const {systemClock} = await import('../src/shared/clock.js')
  const {ZONES} = await import('../src/shared/zones.js')
  const x509 = await import('@peculiar/x509')

  const dbName = `jil_bench_hb_${randomBytes(4).toString('hex')}`
  const admin = await openPg(url, {max: 1, applicationName: 'jil-bench'})
  await admin.exec(`CREATE DATABASE ${dbName}`)
  const u = new URL(url)
  u.pathname = `/${dbName}`
  const dbUrl = u.toString()
  const dir = await mkdtemp(join(tmpdir(), 'jil-bench-heartbeat-'))
  const dataDir = join(dir, 'hq')
  let hq: ChildProcess | undefined
  let gen: ChildProcess | undefined
  try {
    note(`an HQ on PostgreSQL ${redactUrl(dbUrl)}`)
    await initHq({dataDir, hostnames: [], databaseUrl: dbUrl, force: false, profilePath: undefined, hqUrl: 'https://127.0.0.1:8443', clock: systemClock})
    const keys = await readHqKeys(dataDir)
    const ca = await CertificateAuthority.load({certPem: keys.caCert, keyPem: keys.caKey}, systemClock)

    // Node identities as a join makes them (a key per node, a cert from HQ's CA, the nodes and
    // certificates rows HQ's auth reads), without 2,000 round trips through the join route.
    let t0 = performance.now()
    const creds: NodeCred[] = []
    const rows = {id: [] as string[], zone: [] as string[], serial: [] as string[], fp: [] as string[], nb: [] as string[], na: [] as string[]}
    for (let i = 0; i < NODES; i++) {
      const zone = ZONES[i % ZONES.length]!
      const id = `${zone.slice(0, 2)}-HB${String(Math.floor(i / 1000)).padStart(2, '0')}-${String(i % 1000).padStart(3, '0')}`
      const kp = generateKeyPairSync('ec', {namedCurve: 'P-256'})
      const spki = kp.publicKey.export({type: 'spki', format: 'der'})
      const cert = await ca.issueNode(id, zone, new x509.PublicKey(new Uint8Array(spki)))
      creds.push({id, zone, cert: cert.pem, key: kp.privateKey.export({type: 'pkcs8', format: 'pem'}) as string})
      rows.id.push(id)
      rows.zone.push(zone)
      rows.serial.push(cert.serial)
      rows.fp.push(cert.fingerprint)
      rows.nb.push(cert.notBefore.toISOString())
      rows.na.push(cert.notAfter.toISOString())
    }
    const db = await openPg(dbUrl, {max: 1, applicationName: 'jil-bench'})
    try {
      const now = new Date().toISOString()
      await db.query("INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ('Bench Nodes', 'approved', $1, $1)", [now])
      await db.query(
        `INSERT INTO nodes (id, zone, operator, track, status, created_at, joined_at, hardware)
         SELECT id, zone, 'Bench Nodes', 'devnet', 'active', $3, $3, '{"machine_id":"bench","cpu_cores":4,"memory_bytes":8e9,"disk_bytes":1e11}'
           FROM unnest($1::text[], $2::text[]) AS t(id, zone)`,
        [rows.id, rows.zone, now],
      )
      await db.query(
        `INSERT INTO certificates (serial, kind, subject, fingerprint, not_before, not_after)
         SELECT serial, 'node', id, fp, nb, na FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS t(serial, id, fp, nb, na)`,
        [rows.serial, rows.id, rows.fp, rows.nb, rows.na],
      )
      const {rows: s} = await db.query<{v: string; fsync: string; sc: string}>("SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc")
      note(`PostgreSQL ${s[0]?.v} (fsync=${s[0]?.fsync}, synchronous_commit=${s[0]?.sc})`)
    } finally {
      await db.close()
    }
    emit('node identities issued', Math.round(NODES / ((performance.now() - t0) / 1000)), '1/s')
    const credFile = join(dir, 'nodes.json')
    await writeFile(credFile, JSON.stringify({ca: keys.caCert, nodes: creds}), {mode: 0o600})

    const prof = process.env.JIL_BENCH_PROF
    const env: NodeJS.ProcessEnv = {...process.env, JIL_LOG_LEVEL: 'warn'}
    delete env.NODE_OPTIONS
    hq = spawn(process.execPath, [...(prof ? ['--cpu-prof', '--cpu-prof-dir', prof] : []), 'bin/run.js', 'hq', 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--json'], {stdio: ['ignore', 'pipe', 'inherit'], env})
    const hqUrl: string = await new Promise((resolve, reject) => {
      createInterface({input: hq!.stdout!}).once('line', (l) => resolve(JSON.parse(l).url))
      hq!.once('exit', (c) => reject(new Error(`hq serve exited ${c}`)))
    })
    const hqPid = hq.pid!

    gen = fork(process.argv[1]!, ['--generator', credFile], {execArgv: ['--enable-source-maps'], env: {...env, JIL_BENCH_HQ_URL: hqUrl}, stdio: ['ignore', 'inherit', 'inherit', 'ipc']})
    const ask = <T>(msg: unknown): Promise<T> =>
      new Promise((resolve, reject) => {
        const onExit = (c: number | null) => reject(new Error(`generator exited ${c}`))
        gen!.once('exit', onExit)
        gen!.once('message', (m) => {
          gen!.off('exit', onExit)
          resolve(m as T)
        })
        gen!.send(msg as object)
      })

    t0 = performance.now()
    const warm = await ask<{ok: number; errors: number}>({cmd: 'connect'})
    emit('connections opened (one heartbeat each, 64 at a time)', Math.round(NODES / ((performance.now() - t0) / 1000)), '1/s')
    if (warm.errors > 0) note(`${warm.errors} of ${NODES} first heartbeats failed`)

    for (const rate of STEPS) {
      const hq0 = cpuSeconds(hqPid)
      const pg0 = postgresCpuSeconds()
      const m0 = machineCpuSeconds()
      const w0 = performance.now()
      const r = await ask<StepResult>({cmd: 'step', rate, secs: SECS})
      const wall = (performance.now() - w0) / 1000
      const hqCpu = ((cpuSeconds(hqPid) - hq0) / wall) * 100
      const pgCpu = ((postgresCpuSeconds() - pg0) / wall) * 100
      const machineCpu = ((machineCpuSeconds() - m0) / wall) * 100
      emit(`offered ${rate}/s: sustained`, Math.round(r.sustained), '1/s')
      emit(`offered ${rate}/s: p50`, round(r.p50), 'ms')
      emit(`offered ${rate}/s: p99`, round(r.p99), 'ms')
      emit(`offered ${rate}/s: errors`, r.errors, 'count')
      emit(`offered ${rate}/s: generator cpu`, round(r.cpuPercent), '%')
      emit(`offered ${rate}/s: hq cpu`, round(hqCpu), '%')
      emit(`offered ${rate}/s: postgres cpu`, round(pgCpu), '%')
      emit(`offered ${rate}/s: machine cpu (all processes, ${cpus().length} cores)`, round(machineCpu), '%')
      note(`offered ${rate}/s for ${SECS} s: ${r.ok}/${r.scheduled} ok, max ${round(r.max)} ms, send lag ${round(r.sendLagMs)} ms${r.errors ? `, errors ${JSON.stringify(r.errorCodes)}` : ''}`)
    }
    // The ingest's own evidence: rows in history, and how many of the latest-state updates were HOT.
    const db2 = await openPg(dbUrl, {max: 1, applicationName: 'jil-bench'})
    try {
      const {rows: h} = await db2.query<{n: number}>('SELECT count(*)::int AS n FROM node_heartbeat_history')
      const {rows: st} = await db2.query<{upd: number; hot: number}>("SELECT n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot FROM pg_stat_user_tables WHERE relname = 'node_heartbeats'")
      note(`history rows ${h[0]?.n}; node_heartbeats updates ${st[0]?.upd}, HOT ${st[0]?.hot}`)
      if (st[0] && st[0].upd > 0) emit('latest-state updates that were HOT', round((st[0].hot / st[0].upd) * 100), '%')
    } finally {
      await db2.close()
    }
    await ask({cmd: 'close'})
  } finally {
    if (gen && gen.exitCode === null && gen.signalCode === null) {
      gen.kill('SIGTERM')
      await new Promise((r) => gen!.once('exit', r))
    }
    if (hq && hq.exitCode === null && hq.signalCode === null) {
      hq.kill('SIGTERM')
      await new Promise((r) => hq!.once('exit', r))
    }
    await rm(dir, {recursive: true, force: true})
    await admin.exec(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {})
    await admin.close()
  }
}

// ---------------------------------------------------------------------------------------------
// The generator (its own process): one undici Client (one keep-alive connection) per node.

async function generator(credFile: string): Promise<void> {
  const {Client} = await import('undici')
  const hqUrl = process.env.JIL_BENCH_HQ_URL!
  const {ca, nodes} = JSON.parse(await readFile(credFile, 'utf8')) as {ca: string; nodes: NodeCred[]}
  const clients = nodes.map((n) => new Client(hqUrl, {connect: {ca, cert: n.cert, key: n.key}, pipelining: 1, keepAliveTimeout: 120_000, keepAliveMaxTimeout: 120_000}))
  const serials = nodes.map((n) => n.cert.length % 997) // a stable per-node number for realistic variety

  /** A realistic heartbeat: five services, system figures, agent summaries (≈1.5 KB of JSON). */
  function body(i: number): string {
    const n = nodes[i]!
    const now = new Date().toISOString()
    const v = `v95.${serials[i]! % 4}`
    const svc = (name: string, critical: boolean, c: string) => ({name, critical, state: 'running', health: 'healthy', digest: `sha256:${c.repeat(64)}`, version: v})
    return JSON.stringify({
      node_id: n.id,
      time: now,
      agent_version: '0.7.0',
      run_mode: 'running',
      desired_sequence: 12,
      containers: {total: 5, running: 5, healthy: 4, unhealthy: 0, exited: 0, restarting: 0, other: 0},
      services: [svc('validator', true, 'a'), svc('api', true, 'b'), svc('indexer', false, 'c'), svc('relayer', false, 'd'), svc('explorer', false, 'e')],
      system: {cpu_percent: 10 + (i % 50), load1: 0.5 + (i % 7) / 10, memory_used_bytes: 6.2e9, memory_total_bytes: 16e9, disk_used_bytes: 212e9, disk_total_bytes: 500e9, disk_percent: 42.4},
      cert: {serial: '4a5b6c7d8e9f00112233445566778899', not_after: '2026-12-01T00:00:00.000Z'},
      agents: {
        health: {at: now, ok: true, summary: '5/5 containers running; heartbeat sent', critical: 0, warning: 0},
        maintenance: {at: now, ok: true, summary: 'logs rotated, 0 B freed', critical: 0, warning: 0},
        security: {at: now, ok: true, summary: 'no findings', critical: 0, warning: 1},
        update: {at: now, ok: true, summary: '5 services up to date', critical: 0, warning: 0},
      },
      consensus: {latest_height: 1_200_000 + i, catching_up: false},
    })
  }

  async function send(i: number): Promise<{ok: boolean; code: string}> {
    try {
      const r = await clients[i]!.request({path: '/v1/node/heartbeat', method: 'POST', headers: {'content-type': 'application/json'}, body: body(i)})
      const text = await r.body.text()
      if (r.statusCode === 200) return {ok: true, code: '200'}
      let code = String(r.statusCode)
      try {
        code += ` ${(JSON.parse(text) as {code?: string}).code}`
      } catch {
        // not problem+json
      }
      return {ok: false, code}
    } catch (err) {
      return {ok: false, code: (err as {code?: string}).code ?? 'ERROR'}
    }
  }

  let next = 0 // round-robin over the nodes across steps
  process.on('message', async (m: {cmd: string; rate?: number; secs?: number}) => {
    if (m.cmd === 'connect') {
      let ok = 0
      let errors = 0
      let i = 0
      await Promise.all(
        Array.from({length: 64}, async () => {
          while (i < nodes.length) {
            const r = await send(i++)
            if (r.ok) ok++
            else errors++
          }
        }),
      )
      process.send!({ok, errors})
    } else if (m.cmd === 'step') {
      process.send!(await step(m.rate!, m.secs!))
    } else if (m.cmd === 'close') {
      await Promise.all(clients.map((c) => c.close()))
      process.send!({})
      process.exit(0)
    }
  })

  async function step(rate: number, secs: number): Promise<StepResult> {
    const total = Math.round(rate * secs)
    const lat: number[] = []
    const codes: Record<string, number> = {}
    let sent = 0
    let ok = 0
    let lastDone = 0
    let lagSum = 0
    const inflight: Promise<void>[] = []
    const c0 = process.cpuUsage()
    const start = performance.now()
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now()
        const due = Math.min(total, Math.floor(((now - start) / 1000) * rate))
        while (sent < due) {
          const scheduled = start + (sent / rate) * 1000
          lagSum += now - scheduled
          const i = next++ % nodes.length
          sent++
          inflight.push(
            send(i).then((r) => {
              const t = performance.now()
              lastDone = Math.max(lastDone, t)
              if (r.ok) {
                ok++
                lat.push(t - scheduled)
              } else codes[r.code] = (codes[r.code] ?? 0) + 1
            }),
          )
        }
        if (sent >= total) {
          clearInterval(timer)
          resolve()
        }
      }
      const timer = setInterval(tick, 1)
    })
    await Promise.all(inflight)
    const c = process.cpuUsage(c0)
    const wall = performance.now() - start
    lat.sort((a, b) => a - b)
    const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! : NaN)
    const errors = total - ok
    return {
      rate,
      secs,
      scheduled: total,
      sent,
      ok,
      errors,
      errorCodes: codes,
      p50: q(0.5),
      p99: q(0.99),
      max: lat.at(-1) ?? NaN,
      sustained: ok / (Math.max(secs * 1000, lastDone - start) / 1000),
      cpuPercent: ((c.user + c.system) / 1000 / wall) * 100,
      sendLagMs: sent ? lagSum / sent : 0,
    }
  }
}
