// The node daemon's footprint (issue 6): idle RSS of a real `jil daemon` child process after a settle
// period (goal ≤ 64 MiB; node_exporter is ~50 MB) and its CPU over that period, the CPU time of one
// health run (in-process, own + waited-for children such as df/netstat), and the cold start of
// `jil agent run health --json`, which cron pays every minute (median of N child runs).
// Uses a real HQ (`jil hq serve` child, embedded database) and the Docker engine of JIL_DOCKER_HOST
// or DOCKER_HOST (`eval "$(scripts/test-services.sh env)"`).
//
//   npm run build && npm run bench -- daemon [--quick | --settle SECONDS] [--runs N]
//   (default settle: 600 s, as the issue asks; --quick: 60 s)
import {spawn, spawnSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

import {pino} from 'pino'

import {initHq} from '../src/hq/init.js'
import {createAgentContext, runAgent} from '../src/node/agents/run.js'
import {initNode, joinNode} from '../src/node/identity.js'
import {DockerRuntime} from '../src/node/runtime.js'
import {settingsFrom} from '../src/node/settings.js'
import {systemClock} from '../src/shared/clock.js'
import {HqClient} from '../src/shared/hq-client.js'

const argv = process.argv.slice(2)
const opt = (n: string, d: number) => (argv.includes(`--${n}`) ? Number(argv[argv.indexOf(`--${n}`) + 1]) : d)
const SETTLE_S = argv.includes('--quick') ? 60 : opt('settle', 600)
const RUNS = opt('runs', 5)
const NODE = 'CH-BENCH-01'
const OPERATOR = 'Bench Nodes'
const dockerHost = process.env.JIL_DOCKER_HOST ?? process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST

const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: 'daemon', metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`daemon: ${s}\n`)
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Fields of /proc/PID/stat after the command name; utime, stime, cutime, cstime in clock ticks (100/s). */
function procStat(pid: number | 'self'): {utime: number; stime: number; cutime: number; cstime: number} {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return {utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14])}
}

function procStatus(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

const dir = await mkdtemp(join(tmpdir(), 'jil-bench-daemon-'))
const dataDir = join(dir, 'hq')
const stateDir = join(dir, 'node')
const env: NodeJS.ProcessEnv = {...process.env, JIL_LOG_LEVEL: 'warn', JIL_DOCKER_HOST: dockerHost ?? '', JIL_HEALTHZ_LISTEN: '127.0.0.1:0', JIL_STATE_DIR: stateDir}
delete env.NODE_OPTIONS
// The daemon runs as jil.service runs it: with the unit's NODE_OPTIONS (V8 heap sizing).
const unitNodeOptions = /^Environment=NODE_OPTIONS=(.*)$/m.exec(readFileSync('systemd/jil.service', 'utf8'))?.[1]
const daemonEnv: NodeJS.ProcessEnv = {...env, ...(process.env.JIL_BENCH_NODE_OPTIONS !== undefined ? {NODE_OPTIONS: process.env.JIL_BENCH_NODE_OPTIONS} : unitNodeOptions ? {NODE_OPTIONS: unitNodeOptions} : {})}
let hq: ReturnType<typeof spawn> | undefined
let daemon: ReturnType<typeof spawn> | undefined

try {
  note(`an HQ and a joined node (Docker: ${dockerHost ?? 'the default socket'})`)
  await initHq({dataDir, hostnames: [], force: false, profilePath: undefined, hqUrl: 'https://127.0.0.1:8443', clock: systemClock})
  const config = JSON.parse(await readFile(join(dataDir, 'config.json'), 'utf8'))
  await writeFile(join(dataDir, 'config.json'), JSON.stringify({...config, join_minimums: {cpu_cores: 1, memory_bytes: 1, disk_bytes: 1}}), {mode: 0o600})
  const admin = JSON.parse(await readFile(join(dataDir, 'admin.bundle.json'), 'utf8'))
  hq = spawn(process.execPath, ['bin/run.js', 'hq', 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--json'], {stdio: ['ignore', 'pipe', 'ignore'], env})
  const ready = await new Promise<{url: string; ca_fingerprint: string}>((resolve, reject) => {
    createInterface({input: hq!.stdout!}).once('line', (l) => resolve(JSON.parse(l)))
    hq!.once('exit', (c) => reject(new Error(`hq serve exited ${c}`)))
  })
  const client = await HqClient.connect(ready.url, {cert: admin.cert, key: admin.key, ca: admin.ca})
  await client.request('POST', '/v1/operators', {name: OPERATOR, kyc: 'approved'})
  const {token} = await client.request<{token: string}>('POST', '/v1/fleet/nodes', {node_id: NODE, zone: 'CH/FINMA', operator: OPERATOR, track: 'devnet'})
  await client.close()
  await initNode({stateDir, nodeId: NODE, region: 'bench', jurisdiction: 'CH/FINMA', hqUrl: ready.url, operator: OPERATOR})
  await joinNode({stateDir, token, caFingerprint: ready.ca_fingerprint, clock: systemClock, hardware: {machine_id: 'bench', cpu_cores: 4, memory_bytes: 8e9, disk_bytes: 1e11}})

  // CPU of one health run, in-process: one warm-up (module loading), then RUNS measured runs.
  const ctx = await createAgentContext({stateDir, settings: settingsFrom(stateDir, env), clock: systemClock, log: pino({level: 'silent'}), version: 'bench'})
  const cpu: number[] = []
  const wall: number[] = []
  let ok = 0
  for (let i = 0; i <= RUNS; i++) {
    const s0 = procStat('self')
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    const report = await runAgent('health', ctx)
    const t = performance.now() - t0
    const c = process.cpuUsage(c0)
    const s1 = procStat('self')
    if (i === 0) continue
    if (report.ok) ok++
    else note(`health run ${i} not ok: ${report.summary}`)
    // Own CPU at µs resolution; the children's (df, netstat…) from /proc in 10 ms ticks.
    cpu.push((c.user + c.system) / 1000 + (s1.cutime + s1.cstime - s0.cutime - s0.cstime) * 10)
    wall.push(t)
  }
  await ctx.close()
  note(`${ok}/${RUNS} health runs ok`)
  emit('health_run_cpu', round(median(cpu)), 'ms')
  emit('health_run_wall', round(median(wall)), 'ms')

  // Cold start of the cron path: the whole `jil agent run health --json` process.
  const cold: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now()
    const r = spawnSync(process.execPath, ['bin/run.js', 'agent', 'run', 'health', '--json', '--state-dir', stateDir], {env, encoding: 'utf8'})
    cold.push(performance.now() - t0)
    if (r.status !== 0) note(`jil agent run health exited ${r.status}: ${r.stdout.slice(0, 300)}`)
  }
  const base: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now()
    spawnSync(process.execPath, ['-e', '0'])
    base.push(performance.now() - t0)
  }
  emit('agent_run_health_cold_start', Math.round(median(cold)), 'ms')
  emit('node_e_0_baseline', Math.round(median(base)), 'ms')

  // Idle RSS of the daemon: health every 60 s (and update at start) as in production, no stack.
  note(`daemon NODE_OPTIONS: ${daemonEnv.NODE_OPTIONS ?? '(none)'}`)
  daemon = spawn(process.execPath, ['bin/run.js', 'daemon', '--json', '--state-dir', stateDir], {stdio: ['ignore', 'pipe', 'ignore'], env: daemonEnv})
  let out = ''
  daemon.stdout!.on('data', (d) => (out += d))
  const readyLine = await new Promise<string>((resolve, reject) => {
    createInterface({input: daemon!.stdout!}).once('line', resolve)
    daemon!.once('exit', (c) => reject(new Error(`jil daemon exited ${c}: ${out}`)))
  })
  if (!readyLine.startsWith('{"')) throw new Error(`jil daemon did not start: ${await new Promise((r) => daemon!.once('exit', () => r(out)))}`)
  const pid = daemon.pid!
  const healthzUrl = JSON.parse(readyLine).healthz as string
  emit('start_rss', round(procStatus(pid, 'VmRSS')), 'MiB')
  note(`daemon ${pid} ready; settling ${SETTLE_S} s`)
  await sleep(5000) // the start-up runs
  const d0 = procStat(pid)
  const t0 = performance.now()
  await sleep(Math.max(0, SETTLE_S * 1000 - 5000))
  const d1 = procStat(pid)
  const secs = (performance.now() - t0) / 1000
  emit('idle_rss', round(procStatus(pid, 'VmRSS')), 'MiB')
  // Where the memory is, from the daemon's own /metrics (prom-client's process and heap gauges).
  const metrics = await (await fetch(`${healthzUrl}/metrics`)).text()
  const gauge = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN) / 1048576
  note(`heap total ${round(gauge('jil_daemon_nodejs_heap_size_total_bytes'))} MiB, used ${round(gauge('jil_daemon_nodejs_heap_size_used_bytes'))} MiB, external ${round(gauge('jil_daemon_nodejs_external_memory_bytes'))} MiB`)
  emit('peak_rss', round(procStatus(pid, 'VmHWM')), 'MiB')
  emit('idle_cpu', round(((d1.utime + d1.stime + d1.cutime + d1.cstime - d0.utime - d0.stime - d0.cutime - d0.cstime) / 100 / secs) * 100, 2), '%')
  emit('settle', SETTLE_S, 's')
} finally {
  if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
    daemon.kill('SIGTERM')
    await new Promise((r) => daemon!.once('exit', r))
  }
  if (hq && hq.exitCode === null && hq.signalCode === null) {
    hq.kill('SIGTERM')
    await new Promise((r) => hq!.once('exit', r))
  }
  const runtime = await DockerRuntime.connect(dockerHost)
  for (const c of await runtime.list(NODE).catch(() => [])) await runtime.remove(c.id).catch(() => {})
  await rm(dir, {recursive: true, force: true})
}
