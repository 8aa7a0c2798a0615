import {mkdir, rename} from 'node:fs/promises'
import {join} from 'node:path'

import type {Logger} from 'pino'

import type {RunningDaemon} from '../daemon/daemon.js'
import type {RunningHq} from '../hq/server.js'
import {DockerRuntime, type Runtime} from '../node/runtime.js'
import {ProcessRuntime} from '../node/runtime-process.js'
import {signedByPinnedKeys} from '../node/trust.js'
import {defaultProfilePath, readBundle, writeBundle} from '../shared/bundle.js'
import type {Clock} from '../shared/clock.js'
import {JilError, messageOf} from '../shared/errors.js'
import {withinMs} from '../shared/loop.js'
import {exists, lockFile, readText, writeFileAtomic, type FileLock} from '../shared/files.js'
import {hardwareReport} from '../node/hardware.js'
import {connectAs, ensureDemoRelease, ensureHq, ensureUsers, updateHqConfig} from './hq.js'
import {demoLayer, imageFor, pushImage, registryDigest} from './image.js'
import {DEV_SCHEDULE, ensureJoined, heartbeatAfterFirstUpdate, nodeStateDir, startNodeDaemon, writeDevSettings, type JoinOutcome} from './nodes.js'
import {DEMO_IMAGE, DEMO_VERSIONS, devNodes} from './plan.js'
import {externalPostgres, privatePostgres, type DevPostgres} from './postgres.js'
import {pickPort, registryInstalled, REGISTRY_BIN, startRegistry, type LocalRegistry} from './services.js'
import {prepareSyncDatabases, startDemoWrites, syncSettings} from './sync.js'

/**
 * `jil dev`: the whole fleet on one machine. Everything is real and lives in one data dir — HQ on
 * its embedded database, users with bundles, the registry with the demo image, N nodes joined with
 * their own keys and certificates, each a daemon in this process (one PGlite for HQ, never one per
 * node: DESIGN.md §7) — and a second start on the same dir takes it all up again.
 */

export type DockerMode = 'auto' | 'on' | 'off'

export type DevOptions = {
  dataDir: string
  nodes: number
  docker: DockerMode
  /** Where HQ listens; undefined = 127.0.0.1:7443 (or the port of the last run), a free port when taken. */
  listen: {host: string; port: number} | undefined
  /** A PostgreSQL server for event sync; undefined = a private cluster when the binaries are installed. */
  databaseUrl: string | undefined
  clock: Clock
  version: string
  log: Logger
  logFile: string
  /** Progress lines for people (stderr). */
  progress: (line: string) => void
  env?: NodeJS.ProcessEnv
  /** Aborted (Ctrl-C) during start-up: no further step starts, what was started is stopped, and startDev throws DEV_INTERRUPTED. */
  signal?: AbortSignal
}

/** The ready line of `jil dev --json`. */
export type DevReady = {
  url: string
  ca_fingerprint: string
  data_dir: string
  nodes: number
  /** Which runtime the nodes use: the Docker engine, or the no-container runtime. */
  docker: 'on' | 'off'
  sync: 'postgres-log' | 'off'
  /** The CLI profile written (the admin bundle): `jil top` and `jil fleet nodes` use it. */
  profile: string
  registry: string | null
  users_dir: string
  log: string
}

export type RunningDev = {
  ready: DevReady
  /** What was set up or reused, and what fell back: lines for people. */
  notes: string[]
  /** Resolves once the demo rows are written (sync on), with their number. */
  demoRows: Promise<number>
  /** Stops everything: daemons, the nodes' containers (removed), HQ, PostgreSQL, the registry. Idempotent. */
  stop(): Promise<void>
}

/** dev.json: what a second run reuses (ports, so URLs recorded in node dirs and bundles stay right). */
type DevState = {version: 1; hq_port?: number; registry_port?: number; demo?: Record<string, string>}

/**
 * dev.json, or a fresh state when there is none. It only remembers ports, so one that cannot be read
 * is set aside with a note, not fatal: the nodes follow HQ to a new port (repointNode).
 */
export async function readDevState(path: string, notes: string[]): Promise<DevState> {
  if (!(await exists(path))) return {version: 1}
  const text = await readText(path, 'the dev state')
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && (v as {version?: unknown}).version === 1) {
      const {hq_port, registry_port, demo} = v as Record<string, unknown>
      const port = (p: unknown) => (Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536 ? (p as number) : undefined)
      return {version: 1, ...(port(hq_port) ? {hq_port: port(hq_port)} : {}), ...(port(registry_port) ? {registry_port: port(registry_port)} : {}), ...(demo && typeof demo === 'object' ? {demo: demo as Record<string, string>} : {})}
    }
  } catch {
    // not JSON: as below
  }
  notes.push(`${path} was not a state this jil dev wrote; it starts afresh (new ports; the nodes follow HQ)`)
  return {version: 1}
}

export const DEFAULT_HQ_PORT = 7443

export async function startDev(o: DevOptions): Promise<RunningDev> {
  const env = o.env ?? process.env
  const d = o.dataDir
  const paths = {hq: join(d, 'hq'), users: join(d, 'users'), nodes: join(d, 'nodes'), registry: join(d, 'registry'), pg: join(d, 'pg'), state: join(d, 'dev.json'), logs: join(d, 'logs')}
  await mkdir(d, {recursive: true, mode: 0o700})
  await mkdir(paths.logs, {recursive: true, mode: 0o700})
  const lock: FileLock = await lockFile(join(d, 'dev.lock'), 'jil dev', (other) =>
    new JilError('DEV_BUSY', `another jil dev (pid ${other.pid}) runs on ${d}`, {hint: 'stop it (Ctrl-C) or pass another --data-dir'}),
  )
  const notes: string[] = []
  const say = (l: string) => o.progress(l)
  // What was started, undone in reverse order by stop() or by a failed start.
  const undo: {what: string; fn: () => Promise<void>}[] = [{what: 'data dir lock', fn: () => lock.release()}]
  const unwind = async () => {
    for (const u of undo.splice(0).reverse()) {
      const t0 = performance.now()
      await u.fn().then(
        () => o.log.info({step: u.what, ms: Math.round(performance.now() - t0)}, 'stopped'),
        (err: unknown) => o.log.error({err: messageOf(err), step: u.what}, 'stopping failed'),
      )
    }
  }
  // Checked between steps (and before each node's join or start): a step in flight finishes first.
  const checkpoint = () => {
    if (o.signal?.aborted) throw new JilError('DEV_INTERRUPTED', 'jil dev was stopped during start-up; what it had started is stopped again', {hint: 'run jil dev again to start the fleet (it reuses what it made)'})
  }
  try {
    checkpoint()
    const state = await readDevState(paths.state, notes)
    const saveState = () => writeFileAtomic(paths.state, JSON.stringify(state, null, 2) + '\n', 0o600)

    // -- the container engine ------------------------------------------------------------------
    let docker = await chooseEngine(o.docker, env, notes)
    checkpoint()

    // -- the registry and the demo image ---------------------------------------------------------
    let registry: LocalRegistry | undefined
    if (await registryInstalled()) {
      registry = await startRegistry({dir: paths.registry, ...(state.registry_port ? {preferred: state.registry_port} : {}), logFile: join(paths.logs, 'registry.log')})
      undo.push({what: 'registry', fn: () => registry!.stop()})
      state.registry_port = Number(registry.host.split(':')[1])
    } else {
      if (o.docker === 'on') throw new JilError('REGISTRY_UNAVAILABLE', `--docker on needs an image registry: ${REGISTRY_BIN} is not installed`, {hint: 'install Debian\'s docker-registry package, or run with --docker off'})
      notes.push(`no image registry (${REGISTRY_BIN} is not installed): no demo release is signed, the nodes run no services; install docker-registry for the full demo`)
      if (docker) notes.push('without a registry, Docker cannot pull by digest: the nodes use the no-container runtime')
      docker = undefined
    }
    const digests: Record<string, string> = {}
    if (registry) {
      const layer = await demoLayer()
      if (docker && !layer.runnable) {
        const why = layer.busybox ? `${layer.busybox} is not statically linked` : 'no busybox is installed'
        if (o.docker === 'on') throw new JilError('DEMO_IMAGE_UNAVAILABLE', `the demo image needs a static busybox: ${why}`, {hint: 'install Debian\'s busybox-static, or run with --docker off'})
        notes.push(`the demo image cannot run in a container (${why}; install busybox-static): the nodes use the no-container runtime`)
        docker = undefined
      }
      for (const version of [DEMO_VERSIONS.current, DEMO_VERSIONS.next]) {
        // A tag already in the registry is kept: its digest is what HQ signed on an earlier run.
        digests[version] = (await registryDigest(registry.host, DEMO_IMAGE, version)) ?? (await pushImage(registry.host, DEMO_IMAGE, version, imageFor(layer, version)))
      }
      state.demo = digests
    }
    checkpoint()

    // -- PostgreSQL for event sync --------------------------------------------------------------
    let pg: DevPostgres | undefined
    if (o.databaseUrl) {
      pg = await externalPostgres(o.databaseUrl)
    } else {
      pg = await privatePostgres({dir: paths.pg, progress: say})
      if (pg) undo.push({what: 'PostgreSQL', fn: () => pg!.stop()})
      else notes.push('no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): running without event sync; pass --database-url postgres://… to sync over a server of yours')
    }
    checkpoint()

    // -- HQ -------------------------------------------------------------------------------------
    const created = await ensureHq({dir: paths.hq, clock: o.clock, progress: say})
    checkpoint()
    if (!created) notes.push(`reusing HQ in ${paths.hq}`)
    await updateHqConfig(paths.hq, {registry: registry?.host ?? null})
    const wanted = state.hq_port ?? DEFAULT_HQ_PORT
    const hq = await listenHq(o, paths.hq, wanted)
    undo.push({what: 'HQ', fn: () => hq.close()})
    state.hq_port = Number(new URL(hq.url).port)
    await updateHqConfig(paths.hq, {url: hq.url})
    if (!o.listen && state.hq_port !== wanted) notes.push(`port ${wanted} was taken: HQ listens on ${hq.url}`)
    await saveState()

    const users = await ensureUsers({url: hq.url, hqDir: paths.hq, usersDir: paths.users, progress: say})
    checkpoint()
    if (registry) {
      await ensureDemoRelease({url: hq.url, users, registry: registry.host, digest: digests[DEMO_VERSIONS.current]!, version: DEMO_VERSIONS.current, progress: say})
    }
    checkpoint()

    // -- nodes ----------------------------------------------------------------------------------
    const plan = devNodes(o.nodes)
    const ops = await connectAs(hq.url, users['ops-lead'])
    const outcomes = new Map<string, JoinOutcome>()
    try {
      const revoked = new Set((await ops.fleetNodes({status: 'revoked'})).nodes.map((n) => n.id))
      const hardware = await hardwareReport({stateDir: d})
      const toJoin = plan.filter((n) => !revoked.has(n.id))
      for (const n of plan) if (revoked.has(n.id)) outcomes.set(n.id, 'revoked')
      let joined = 0
      await pool(toJoin, 4, o.signal, async (n) => {
        const r = await ensureJoined({node: n, stateDir: nodeStateDir(paths.nodes, n.id), url: hq.url, caFingerprint: hq.caFingerprint, ops, hardware, clock: o.clock})
        outcomes.set(n.id, r)
        if (r === 'joined' || r === 'rejoined') say(`node ${n.id} (${n.zone}, ${n.track}) ${r} HQ (${++joined}/${toJoin.length})`)
      })
    } finally {
      await ops.close()
    }
    checkpoint()
    const gone = plan.filter((n) => outcomes.get(n.id) === 'revoked')
    if (gone.length) notes.push(`revoked at HQ, not started: ${gone.map((n) => n.id).join(', ')}`)
    const live = plan.filter((n) => outcomes.get(n.id) !== 'revoked')
    const reused = live.filter((n) => outcomes.get(n.id) === 'existing').length
    if (reused) notes.push(`${reused} node${reused === 1 ? '' : 's'} reused with their certificates`)

    if (docker) {
      // A node that joined just now has no containers yet: any labelled with its id belong to an
      // earlier dev fleet on this engine (its data dir deleted), and would otherwise count as its own.
      const fresh = live.filter((n) => outcomes.get(n.id) === 'joined')
      const stale = (await Promise.all(fresh.map(async (n) => ((await docker!.list(n.id)).length ? n.id : undefined)))).filter((x): x is string => x !== undefined)
      await Promise.all(stale.map((id) => removeContainers(docker, id)))
      if (stale.length) notes.push(`removed containers an earlier dev fleet left for ${stale.join(', ')}`)
    }
    if (pg) {
      say('preparing the nodes\' sync databases')
      await prepareSyncDatabases(pg, live)
    }

    // -- runtimes and daemons --------------------------------------------------------------------
    const runtimes = new Map<string, Runtime & {close?: () => Promise<void>}>()
    const daemons = new Map<string, RunningDaemon>()
    const dockerHost = env.JIL_DOCKER_HOST || env.DOCKER_HOST
    const firstBeats: Promise<void>[] = []
    const stopBeats = new AbortController()
    undo.push({
      what: 'nodes',
      fn: async () => {
        stopBeats.abort()
        await Promise.all(firstBeats)
        await Promise.all([...daemons.values()].map((x) => x.stop()))
        // Containers are removed, not left: a new run creates them again from the cached image.
        await Promise.all(live.map((n) => removeContainers(runtimes.get(n.id), n.id)))
        await Promise.all([...runtimes.values()].map((r) => r.close?.()))
      },
    })
    await pool(live, 5, o.signal, async (n) => {
      const stateDir = nodeStateDir(paths.nodes, n.id)
      await writeDevSettings(stateDir, {...DEV_SCHEDULE, ...(docker && dockerHost ? {JIL_DOCKER_HOST: dockerHost} : {}), ...(pg ? syncSettings(pg, n.id) : {})})
      const runtime: Runtime & {close?: () => Promise<void>} = docker ?? (await ProcessRuntime.open({dir: join(stateDir, 'runtime'), signed: signedByPinnedKeys(stateDir)}))
      runtimes.set(n.id, runtime)
      const since = o.clock.now()
      const daemon = await startNodeDaemon({stateDir, runtime, clock: o.clock, log: o.log.child({svc: 'jil-daemon'}), version: o.version})
      daemons.set(n.id, daemon)
      firstBeats.push(heartbeatAfterFirstUpdate({stateDir, daemon, since, signal: stopBeats.signal}))
    })
    checkpoint()
    say(`${daemons.size} node daemon${daemons.size === 1 ? '' : 's'} running (${docker ? 'Docker' : 'no-container runtime'})`)

    // -- the CLI profile ------------------------------------------------------------------------
    const profile = defaultProfilePath(env)
    const existing = await readBundle(profile).catch(() => undefined)
    if (existing && !(existing.ca_fingerprint === hq.caFingerprint && existing.name === 'admin')) {
      const backup = `${profile}.${o.clock.now().toISOString().replace(/[:.]/g, '-')}.bak`
      await rename(profile, backup)
      notes.push(`the previous CLI profile was kept as ${backup}`)
    } else if (!existing && (await exists(profile))) {
      await rename(profile, `${profile}.${o.clock.now().toISOString().replace(/[:.]/g, '-')}.bak`)
    }
    await writeBundle(profile, users.admin.bundle)

    let demoRows: Promise<number> = Promise.resolve(0)
    if (pg) {
      const writes = startDemoWrites({pg, nodes: live, log: o.log})
      undo.push({what: 'demo writes', fn: () => writes.stop()})
      demoRows = writes.done
    }

    // The last word: a Ctrl-C that came during the steps above stops the fleet rather than announce it.
    checkpoint()
    const ready: DevReady = {
      url: hq.url,
      ca_fingerprint: hq.caFingerprint,
      data_dir: d,
      nodes: daemons.size,
      docker: docker ? 'on' : 'off',
      sync: pg ? 'postgres-log' : 'off',
      profile,
      registry: registry?.host ?? null,
      users_dir: paths.users,
      log: o.logFile,
    }
    let stopping: Promise<void> | undefined
    return {ready, notes, demoRows, stop: () => (stopping ??= unwind())}
  } catch (err) {
    await unwind()
    throw err
  }
}

/** undefined when the engine answers within `ms`, else why not. */
/**
 * The Docker engine the nodes use: the one at JIL_DOCKER_HOST / DOCKER_HOST / the default socket when
 * it answers. Under --docker auto, no engine (none there, not answering, or a host this jil cannot
 * use, like ssh://) is a note and the no-container runtime; under --docker on it is an error.
 */
export async function chooseEngine(mode: 'auto' | 'on' | 'off', env: Readonly<Record<string, string | undefined>>, notes: string[]): Promise<DockerRuntime | undefined> {
  if (mode === 'off') return undefined
  const host = env.JIL_DOCKER_HOST || env.DOCKER_HOST || undefined
  let candidate: DockerRuntime | undefined
  let reason: string | undefined = 'no DOCKER_HOST and no /var/run/docker.sock'
  try {
    if (host || (await exists('/var/run/docker.sock'))) candidate = await DockerRuntime.connect(host)
  } catch (err) {
    if (!(err instanceof JilError) || mode === 'on') throw err
    reason = err.message
  }
  if (candidate) reason = await pingWithin(candidate, 3000)
  if (candidate && reason === undefined) return candidate
  if (mode === 'on') throw new JilError('DOCKER_UNREACHABLE', `--docker on, but no Docker engine answers: ${reason}`, {hint: 'start dockerd (or set DOCKER_HOST), or run with --docker off'})
  notes.push(`no Docker engine (${reason}): the nodes use the no-container runtime (services run as processes of jil dev)`)
  return undefined
}

async function pingWithin(rt: DockerRuntime, ms: number): Promise<string | undefined> {
  try {
    await withinMs(rt.ping(), ms, 'the engine')
    return undefined
  } catch (err) {
    return messageOf(err)
  }
}

/**
 * HQ on --listen as given; without it on the port of the last run or 7443, and on a free port when
 * that one is taken (so a second dev fleet, or anything on 7443, does not stop this one).
 */
async function listenHq(o: DevOptions, dir: string, preferred: number): Promise<RunningHq> {
  const [{startHq}] = await Promise.all([import('../hq/server.js')])
  const start = (listen: {host: string; port: number}) =>
    startHq({
      dataDir: dir,
      listen,
      clock: o.clock,
      logger: o.log.child({svc: 'jil-hq'}),
      version: o.version,
      // A dev fleet moves within seconds: rollouts advance every second, alerts are evaluated every 15 s.
      rolloutTickMs: 1000,
      alertEveryMs: 15_000,
      alerts: {registryScanMs: 60_000},
    })
  if (o.listen) return start(o.listen)
  const port = await pickPort(preferred)
  try {
    return await start({host: '127.0.0.1', port})
  } catch (err) {
    // Taken between the check and the listen: any free port.
    if (!(err instanceof JilError && err.code === 'LISTEN_FAILED')) throw err
    return start({host: '127.0.0.1', port: 0})
  }
}

async function removeContainers(rt: Runtime | undefined, nodeId: string): Promise<void> {
  if (!rt) return
  const cs = await rt.list(nodeId).catch(() => [])
  await Promise.all(
    cs.map(async (c) => {
      if (c.state === 'running' || c.state === 'restarting' || c.state === 'paused') await rt.stop(c.id, 3).catch(() => {})
      await rt.remove(c.id).catch(() => {})
    }),
  )
}

/**
 * Runs fn over items, at most `n` at a time; the first failure is thrown once all have settled. Once
 * `signal` is aborted no further item starts (those in flight finish).
 */
async function pool<T>(items: readonly T[], n: number, signal: AbortSignal | undefined, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const errors: unknown[] = []
  await Promise.all(
    Array.from({length: Math.min(n, items.length)}, async () => {
      while (next < items.length && !signal?.aborted) {
        const item = items[next++]!
        await fn(item).catch((err: unknown) => errors.push(err))
      }
    }),
  )
  if (errors.length) throw errors[0]
}
