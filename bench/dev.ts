// `jil dev` (issue 11): the time from spawning `jil dev --nodes N` to N active nodes visible to
// `jil fleet nodes --json` (and to N nodes heartbeating their demo stack), and the memory of the dev
// process — HQ on its embedded database plus the N daemons — read from /proc: RSS at ready, after a
// settle period, and its peak. Then a second start on the same data dir (everything reused) and the
// time Ctrl-C takes. The services' own processes (no-container runtime) and PostgreSQL are not in
// the dev process's RSS; their total is printed as notes.
//
//   npm run build && npm run bench -- dev [--nodes N] [--settle SECONDS] [--docker auto|on|off] [--database-url URL]
//   (default: 20 nodes, 30 s settle, --docker off, a private PostgreSQL cluster when installed)
import {spawn, spawnSync, type ChildProcess} from 'node:child_process'
import {readdirSync, readFileSync, readlinkSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {setTimeout as sleep} from 'node:timers/promises'

import {opt} from './lib/args.js'

const argv = process.argv.slice(2)
const str = (n: string, d: string | undefined) => (argv.includes(`--${n}`) ? argv[argv.indexOf(`--${n}`) + 1] : d)
const NODES = opt('nodes', 20)
const SETTLE_S = opt('settle', 30)
const DOCKER = str('docker', 'off')!
const DB_URL = str('database-url', undefined)

const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: 'dev', metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`dev: ${s}\n`)
const mib = (kb: number) => Math.round((kb / 1024) * 10) / 10

/** VmRSS and VmHWM (peak) of a process, in kB. */
function memory(pid: number): {rss: number; hwm: number} {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0)
  return {rss: kb('VmRSS'), hwm: kb('VmHWM')}
}

/** Total RSS (kB) of the processes whose environment names a no-container-runtime container under `dir`. */
function servicesRss(dir: string): {count: number; kb: number} {
  let count = 0
  let kb = 0
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      if (!readFileSync(`/proc/${e}/environ`, 'utf8').includes('JIL_CONTAINER_ID=')) continue
      if (!readFileSync(`/proc/${e}/cmdline`, 'utf8').length) continue
      const cwd = readlinkSync(`/proc/${e}/cwd`)
      if (!cwd.startsWith(dir)) continue
      count++
      kb += memory(Number(e)).rss
    } catch {
      // gone meanwhile
    }
  }
  return {count, kb}
}

type Fleet = {id: string; status: string; last_heartbeat_at: string | null; versions: Record<string, string | null>}

function fleetNodes(env: NodeJS.ProcessEnv): Fleet[] {
  const r = spawnSync(process.execPath, ['bin/run.js', 'fleet', 'nodes', '--json'], {env, encoding: 'utf8'})
  if (r.status !== 0) return []
  return (JSON.parse(r.stdout) as {nodes: Fleet[]}).nodes
}

async function start(dir: string, env: NodeJS.ProcessEnv): Promise<{child: ChildProcess; ready: Record<string, unknown>; t0: number; tReady: number; exited: Promise<number | null>}> {
  const t0 = performance.now()
  const args = ['bin/run.js', 'dev', '--nodes', String(NODES), '--data-dir', dir, '--docker', DOCKER, '--listen', '127.0.0.1:0', '--json', ...(DB_URL ? ['--database-url', DB_URL] : [])]
  const child = spawn(process.execPath, args, {env, stdio: ['ignore', 'pipe', 'pipe']})
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  const exited = new Promise<number | null>((r) => child.once('close', (c) => r(c)))
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({input: child.stdout!}).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>))
    void exited.then((c) => reject(new Error(`jil dev exited ${c} before ready:\n${stderr}`)))
  })
  return {child, ready, t0, tReady: performance.now(), exited}
}

/** Polls `jil fleet nodes --json` until `ok` holds; the elapsed ms since t0. */
async function waitFleet(env: NodeJS.ProcessEnv, t0: number, ok: (nodes: Fleet[]) => boolean, what: string): Promise<number> {
  const deadline = performance.now() + 300_000
  while (performance.now() < deadline) {
    if (ok(fleetNodes(env))) return performance.now() - t0
    await sleep(250)
  }
  throw new Error(`timed out waiting for ${what}`)
}

const tmp = await mkdtemp(join(tmpdir(), 'jil-bench-dev-'))
const dir = join(tmp, 'dev')
const env: NodeJS.ProcessEnv = {...process.env, XDG_CONFIG_HOME: join(tmp, 'config'), JIL_USER: '', JIL_HQ_URL: '', JIL_DATABASE_URL: '', JIL_DEV_DATA_DIR: ''}
const active = (ns: Fleet[]) => ns.filter((n) => n.status === 'active').length >= NODES
const running = (since: number) => (ns: Fleet[]) => ns.filter((n) => n.status === 'active' && n.versions.api === 'v1.0' && n.last_heartbeat_at !== null && Date.parse(n.last_heartbeat_at) >= since).length >= NODES
let current: Awaited<ReturnType<typeof start>> | undefined
try {
  note(`cold start: jil dev --nodes ${NODES} --docker ${DOCKER}${DB_URL ? ' --database-url …' : ''} in ${dir}`)
  const wall0 = Date.now()
  const cold = (current = await start(dir, env))
  emit('cold_ready', Math.round(cold.tReady - cold.t0), 'ms')
  emit('cold_nodes_active', Math.round(await waitFleet(env, cold.t0, active, `${NODES} active nodes`)), 'ms')
  emit('cold_nodes_running', Math.round(await waitFleet(env, cold.t0, running(wall0), `${NODES} nodes heartbeating v1.0`)), 'ms')
  note(`ready line: ${JSON.stringify(cold.ready)}`)
  const atReady = memory(cold.child.pid!)
  emit('rss_running', mib(atReady.rss), 'MiB')
  note(`settling ${SETTLE_S} s`)
  let cpu0 = readFileSync(`/proc/${cold.child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  const c0 = Number(cpu0[11]) + Number(cpu0[12])
  await sleep(SETTLE_S * 1000)
  cpu0 = readFileSync(`/proc/${cold.child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  const settled = memory(cold.child.pid!)
  emit('rss_settled', mib(settled.rss), 'MiB')
  emit('rss_peak', mib(settled.hwm), 'MiB')
  emit('cpu_settled', Math.round(((Number(cpu0[11]) + Number(cpu0[12]) - c0) / 100 / SETTLE_S) * 1000) / 10, '%')
  const svc = servicesRss(dir)
  if (svc.count) note(`the services' ${svc.count} processes (no-container runtime) hold ${mib(svc.kb)} MiB RSS besides`)
  let t = performance.now()
  cold.child.kill('SIGINT')
  const code = await cold.exited
  emit('stop', Math.round(performance.now() - t), 'ms')
  if (code !== 0) throw new Error(`jil dev exited ${code} on SIGINT`)

  note('warm start: the same data dir')
  const wall1 = Date.now()
  const warm = (current = await start(dir, env))
  emit('warm_ready', Math.round(warm.tReady - warm.t0), 'ms')
  emit('warm_nodes_running', Math.round(await waitFleet(env, warm.t0, running(wall1), `${NODES} nodes heartbeating v1.0 again`)), 'ms')
  // The cold peak includes HQ's first PGlite (initdb), closed before HQ opens it again: a warm start has none.
  const warmMem = memory(warm.child.pid!)
  emit('warm_rss_running', mib(warmMem.rss), 'MiB')
  emit('warm_rss_peak', mib(warmMem.hwm), 'MiB')
  t = performance.now()
  warm.child.kill('SIGINT')
  await warm.exited
  emit('warm_stop', Math.round(performance.now() - t), 'ms')
  current = undefined
} finally {
  if (current && current.child.exitCode === null) {
    current.child.kill('SIGINT')
    await current.exited
  }
  // The private PostgreSQL cluster lives outside a data dir the postgres user cannot reach (root, 0700 temp dir).
  let elsewhere = ''
  try {
    elsewhere = readFileSync(join(dir, 'pg', 'cluster-location'), 'utf8').trim()
  } catch {
    // the cluster is under the data dir (or there is none)
  }
  if (elsewhere.startsWith('/tmp/jil-dev-pg-')) await rm(elsewhere, {recursive: true, force: true})
  await rm(tmp, {recursive: true, force: true})
}
