// Node admission at HQ: joins per second (token check, CSR verify, issue, DB, audit, in one
// transaction) and new mutual-TLS handshakes per second, against a real `jil hq serve` child
// process on the embedded database; HQ's CPU time is read from /proc to give per-CPU-second rates.
//
//   npm run build && npm run bench -- join [--joins N] [--handshakes N] [--conc C]
import {spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

import {Agent, request} from 'undici'

import {initHq} from '../src/hq/init.js'
import {systemClock} from '../src/shared/clock.js'
import {newKeyAndCsr} from '../src/shared/csr.js'

const argv = process.argv.slice(2)
const opt = (n: string, d: number) => (argv.includes(`--${n}`) ? Number(argv[argv.indexOf(`--${n}`) + 1]) : d)
const JOINS = opt('joins', 200)
const HANDSHAKES = opt('handshakes', 2000)
const CONC = opt('conc', 8)
const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: 'join', metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`join: ${s}\n`)

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

async function pool<T>(n: number, conc: number, fn: (i: number) => Promise<T>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({length: conc}, async () => {
    while (next < n) await fn(next++)
  }))
}

const dir = await mkdtemp(join(tmpdir(), 'jil-bench-join-'))
const dataDir = join(dir, 'hq')
note('creating an HQ')
await initHq({dataDir, hostnames: [], force: false, profilePath: undefined, hqUrl: 'https://127.0.0.1:8443', clock: systemClock})
const config = JSON.parse(await readFile(join(dataDir, 'config.json'), 'utf8'))
await writeFile(join(dataDir, 'config.json'), JSON.stringify({...config, join_minimums: {cpu_cores: 1, memory_bytes: 1, disk_bytes: 1}}), {mode: 0o600})
const admin = JSON.parse(await readFile(join(dataDir, 'admin.bundle.json'), 'utf8'))
const child = spawn(process.execPath, [...(process.env.JIL_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.JIL_BENCH_PROF] : []), 'bin/run.js', 'hq', 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--json'], {stdio: ['ignore', 'pipe', 'ignore'], env: {...process.env, JIL_LOG_LEVEL: 'warn'}})
const url: string = await new Promise((resolve, reject) => {
  createInterface({input: child.stdout!}).once('line', (l) => resolve(JSON.parse(l).url))
  child.once('exit', (c) => reject(new Error(`hq serve exited ${c}`)))
})
try {
  const adminAgent = new Agent({connect: {ca: admin.ca, cert: admin.cert, key: admin.key}, connections: CONC})
  const post = async (agent: Agent, path: string, body: unknown) => {
    const r = await request(url + path, {method: 'POST', dispatcher: agent, body: JSON.stringify(body), headers: {'content-type': 'application/json'}})
    const text = await r.body.text()
    if (r.statusCode !== 200) throw new Error(`${path}: ${r.statusCode} ${text}`)
    return JSON.parse(text)
  }
  await post(adminAgent, '/v1/operators', {name: 'Bench Nodes', kyc: 'approved'})
  note(`admitting ${JOINS} nodes and making their CSRs (client side, not timed)`)
  const zones = ['CH/FINMA', 'SG/MAS', 'US/FINCEN', 'GB/FCA', 'DE/BAFIN', 'JP/JFSA', 'BR/CVM', 'IN/SEBI', 'AU/ASIC', 'KR/FSC', 'CA/OSC', 'HK/SFC', 'AE/FSRA']
  const joins: {token: string; csr: string}[] = []
  for (let i = 0; i < JOINS; i++) {
    const id = `CH-B${String(Math.floor(i / 100)).padStart(2, '0')}-${String(i % 100).padStart(2, '0')}`
    const t = await post(adminAgent, '/v1/fleet/nodes', {node_id: id, zone: zones[i % zones.length], operator: 'Bench Nodes'})
    joins.push({token: t.token, csr: (await newKeyAndCsr(id, `jil://node/${id}`)).csrPem})
  }
  const anon = new Agent({connect: {ca: admin.ca}, connections: CONC})
  const hw = {machine_id: 'bench', cpu_cores: 4, memory_bytes: 8e9, disk_bytes: 1e11}
  let cpu0 = cpuSeconds(child.pid!)
  let t0 = performance.now()
  await pool(JOINS, CONC, (i) => post(anon, '/v1/node/join', {token: joins[i]!.token, csr: joins[i]!.csr, operator: 'Bench Nodes', hardware: hw}))
  let secs = (performance.now() - t0) / 1000
  let cpu = cpuSeconds(child.pid!) - cpu0
  emit(`joins (${CONC} concurrent, embedded database)`, Math.round(JOINS / secs), '1/s')
  emit('joins per HQ CPU-second', Math.round(JOINS / cpu), '1/cpu-s')

  // New connections: each request on a fresh TLS connection presenting the admin's P-256 cert.
  cpu0 = cpuSeconds(child.pid!)
  t0 = performance.now()
  // One secure context for all clients (parsing the key per connection would be the client's cost, not HQ's).
  const {createSecureContext} = await import('node:tls')
  const secureContext = createSecureContext({ca: admin.ca, cert: admin.cert, key: admin.key})
  await pool(HANDSHAKES, CONC * 2, async () => {
    const agent = new Agent({connect: {secureContext, servername: 'localhost'}, pipelining: 0})
    const r = await request(url + '/v1/health', {dispatcher: agent, headers: {connection: 'close'}})
    await r.body.text()
    if (r.statusCode !== 200) throw new Error(`health ${r.statusCode}`)
    await agent.close()
  })
  secs = (performance.now() - t0) / 1000
  cpu = cpuSeconds(child.pid!) - cpu0
  emit('new mTLS connections (each with one authenticated request)', Math.round(HANDSHAKES / secs), '1/s')
  emit('new mTLS connections per HQ CPU-second', Math.round(HANDSHAKES / cpu), '1/cpu-s')
  await adminAgent.close()
  await anon.close()
} finally {
  child.kill('SIGTERM')
  await new Promise((r) => child.once('exit', r))
  await rm(dir, {recursive: true, force: true})
}
