import {performance} from 'node:perf_hooks'

import type {Logger} from 'pino'

import {AGENT_NAMES, type AgentName} from '../shared/agents.js'
import {JilError} from '../shared/errors.js'
import type {HqClient} from '../shared/hq-client.js'
import {createAgentContext, runAgent, type ContextOptions} from '../node/agents/run.js'
import {executeCommands, nodeCommandIo} from '../node/commands.js'
import {readLastReport} from '../node/state.js'
import type {AgentContext} from '../node/agents/types.js'
import {loadNodeIdentity} from '../node/identity.js'
import type {NodeSettings} from '../node/settings.js'
import {startCommandLoop, type CommandLoop} from './command-loop.js'
import {REFUSAL_CODES, healthProbe, startHealthzServer, type HealthReason, type HqRefusal, type NodeHealth} from './healthz.js'
import {createDaemonMetrics} from './metrics.js'
import {Scheduler, type Job, type RunRefusal, type Schedule, type Timers} from './scheduler.js'
import type {SyncRunner} from '../sync/runner.js'

/**
 * The node daemon (`jil daemon`): one agent context for its lifetime, the four agents on their
 * schedules (single-flight, jittered), `/healthz` and `/metrics` on a local port. Stopping (SIGTERM,
 * or the `signal`) stops scheduling, aborts the agents' long waits (an update's health wait restores
 * and returns), waits for the runs in flight, then closes.
 */

/** What an agent context takes (`signal`: aborting it stops the daemon, as stop() does), and: */
export type DaemonOptions = ContextOptions & {
  /** Tests drive the schedule with their own timers; the default is node's. */
  timers?: Timers
  random?: () => number
  /** The agents to schedule (default all four); the others can still be run with runNow. */
  agents?: readonly AgentName[]
  /** How long a /healthz answer is reused (default 5 s). */
  healthzCacheMs?: number
  /** Long-poll HQ for fleet commands (default true). */
  commands?: boolean
}

export type DaemonReady = {node_id: string; healthz: string}

export type RunningDaemon = {
  ready: DaemonReady
  /** Runs an agent now under its single-flight lock (as a scheduled tick would). */
  runNow(agent: AgentName): Promise<{ran: true} | {ran: false; reason: RunRefusal}>
  health(): Promise<NodeHealth>
  /** Stops scheduling, waits for the runs in flight, closes. Idempotent. */
  stop(): Promise<void>
  /** Resolves once stopped, however the stop began. */
  stopped: Promise<void>
}

/** The daemon's structured log: JSON to stderr (systemd's journal, or the log file cron appends to). */
export async function daemonLogger(level = process.env.JIL_LOG_LEVEL ?? 'info'): Promise<Logger> {
  const {pino} = await import('pino')
  return pino({level, base: {svc: 'jil-daemon'}, redact: {paths: ['*.key', '*.token', '*.secret'], censor: '[redacted]'}}, pino.destination({fd: 2, sync: false}))
}

export function schedules(settings: NodeSettings): Record<AgentName, Schedule> {
  return {
    health: {every: settings.schedule.healthMs},
    security: {every: settings.schedule.securityMs},
    update: {every: settings.schedule.updateMs},
    maintenance: {dailyAtUtc: settings.schedule.maintenanceAtUtc},
  }
}

/** A fresh node gets its stack at once (update) and tells HQ it is alive (health). */
const RUN_AT_START: ReadonlySet<AgentName> = new Set(['health', 'update'])

export async function runDaemon(o: DaemonOptions): Promise<RunningDaemon> {
  // Refuse clearly before anything starts: NODE_NOT_JOINED / NODE_NOT_INITIALIZED with their hints.
  const first = await loadNodeIdentity(o.stateDir)
  const nodeId = first.identity.node_id
  const log = o.log.child({node: nodeId})
  const abort = new AbortController()
  const base = await createAgentContext({
    stateDir: o.stateDir,
    // The command loop below picks up fleet commands: the health runs leave them to it.
    settings: o.commands === false ? o.settings : {...o.settings, commandsInHealthRun: false},
    clock: o.clock,
    log,
    version: o.version,
    signal: abort.signal,
    ...(o.runtime ? {runtime: o.runtime} : {}),
  })

  // HQ's verdict on the certificate, from whatever call an agent (or the report) made last.
  let refusal: HqRefusal | undefined
  const watched = new WeakMap<HqClient, HqClient>()
  const ctx: AgentContext = {
    ...base,
    async hq() {
      const serial = (await base.identity()).cert.serial
      const client = await base.hq()
      let w = watched.get(client)
      if (!w) {
        w = watchRefusals(client, (r) => {
          if (r === null) refusal = undefined
          else if (r) {
            if (refusal?.code !== r.code) log.error({code: r.code, serial}, 'HQ refused the node certificate: /healthz fails')
            refusal = {...r, serial}
          }
        })
        watched.set(client, w)
      }
      return w
    },
    // With a bus, the health run's heartbeat also goes out on jil.fleet.status (best effort).
    ...(o.settings.sync ? {publishStatus: (hb: unknown) => sync?.publishStatus(hb) ?? Promise.resolve({published: false as const, reason: 'sync is starting'})} : {}),
  }

  let stopping = false
  // Event sync, when the node config enables it (JIL_SYNC_TRANSPORT): relay and applier run here.
  let sync: SyncRunner | undefined
  const probe = healthProbe({
    stateDir: o.stateDir,
    nodeId,
    clock: o.clock,
    identity: () => base.identity(),
    runtime: () => base.runtime(),
    hqRefusal: () => refusal,
    extra: (): HealthReason[] => (stopping ? [{code: 'DAEMON_STOPPING', message: 'the daemon is stopping'}] : []),
    ...(o.settings.sync ? {sync: () => sync?.snapshot() ?? {caught_up: false, lag_s: 0, error: 'starting'}} : {}),
    ...(o.healthzCacheMs !== undefined ? {cacheMs: o.healthzCacheMs} : {}),
  })

  const agents = o.agents ?? AGENT_NAMES
  const metrics = await createDaemonMetrics({probe, nodeId, agents, ...(o.settings.sync ? {sync: () => sync?.snapshot()} : {})})
  const plan = schedules(o.settings)
  const run = async (agent: AgentName): Promise<void> => {
    const t0 = performance.now()
    const report = await runAgent(agent, ctx)
    const seconds = (performance.now() - t0) / 1000
    metrics.agentRun(agent, report.ok, seconds, o.clock.now())
    const fields = {agent, ok: report.ok, findings: report.findings.length, duration_ms: Math.round(seconds * 1000), ...(report.error ? {error: report.error.code} : {})}
    if (report.ok) log.info(fields, report.summary)
    else log.warn(fields, report.summary)
  }
  const jobs: Job[] = AGENT_NAMES.map((agent) => ({name: agent, schedule: plan[agent], runAtStart: RUN_AT_START.has(agent), run: () => run(agent)}))
  const scheduled = new Set(agents)
  // Every agent has a lock (runNow of an unscheduled agent is still single-flight); only the chosen ones get timers.
  const scheduler = new Scheduler(jobs.filter((j) => scheduled.has(j.name as AgentName)), {
    clock: o.clock,
    jitterMs: o.settings.jitterMs,
    ...(o.timers ? {timers: o.timers} : {}),
    ...(o.random ? {random: o.random} : {}),
    log,
    onSkip: (job) => metrics.skippedTick(job as AgentName),
  })
  const manual = new Scheduler(jobs.filter((j) => !scheduled.has(j.name as AgentName)), {clock: o.clock, jitterMs: 0, log})

  let server: Awaited<ReturnType<typeof startHealthzServer>>
  try {
    server = await startHealthzServer({listen: o.settings.healthzListen, probe, metrics: () => metrics.render(), log})
  } catch (err) {
    await base.close()
    throw err
  }

  let resolveStopped!: () => void
  const stopped = new Promise<void>((r) => (resolveStopped = r))
  let stopPromise: Promise<void> | undefined
  let commandLoop: CommandLoop | undefined
  const stop = (): Promise<void> => {
    stopPromise ??= (async () => {
      stopping = true
      log.info('stopping: no new runs; waiting for the runs in flight')
      const drained = Promise.all([scheduler.stop(), manual.stop(), commandLoop?.stop(), sync?.stop()])
      abort.abort(new JilError('DAEMON_STOPPING', 'the daemon is stopping'))
      await drained
      await server.close()
      await base.close()
      log.info('stopped')
      resolveStopped()
    })()
    return stopPromise
  }
  if (o.signal) {
    if (o.signal.aborted) void stop()
    else o.signal.addEventListener('abort', () => void stop(), {once: true})
  }

  if (o.settings.sync) {
    const [{startSync}, {brokerIdentity}] = await Promise.all([import('../sync/runner.js'), import('../sync/node.js')])
    sync = await startSync({settings: o.settings.sync, nodeId, clock: o.clock, log, stateDir: o.stateDir, identity: brokerIdentity(o.stateDir)})
  }
  scheduler.start()
  if (o.commands !== false && !stopping) commandLoop = startCommands(ctx, (agent) => (scheduled.has(agent) ? scheduler : manual).runNow(agent))
  log.info({healthz: server.url, agents, jitter_ms: o.settings.jitterMs}, 'daemon started')
  return {
    ready: {node_id: nodeId, healthz: server.url},
    runNow: (agent) => (scheduled.has(agent) ? scheduler : manual).runNow(agent),
    health: probe,
    stop,
    stopped,
  }
}

/**
 * The fleet command loop of a daemon. A refresh runs the update agent through the scheduler's
 * single-flight lock (waiting out a run in flight: it may have fetched the document before the
 * change), so its report reaches HQ like any update run's.
 */
function startCommands(ctx: AgentContext, runNow: (agent: AgentName) => Promise<{ran: true} | {ran: false; reason: RunRefusal}>): CommandLoop {
  const io = nodeCommandIo(ctx, {
    refresh: async () => {
      for (;;) {
        const r = await runNow('update')
        if (r.ran) break
        if (r.reason !== 'busy') throw new JilError('DAEMON_STOPPING', 'the daemon is stopping: the refresh did not run', {hint: 'the next update run applies the desired state'})
        await new Promise((resolve) => setTimeout(resolve, 1_000))
      }
      const report = await readLastReport(ctx.stateDir, 'update')
      if (!report) throw new JilError('INTERNAL', 'the update run left no report')
      // Tell HQ at once what now runs (a rollout waits on the heartbeat), not at the next 60-second tick.
      void runNow('health').catch(() => {})
      return report
    },
  })
  return startCommandLoop({
    fetch: async (waitS, signal) => (await (await ctx.hq()).nodeCommands(waitS, signal)).commands,
    execute: async (commands) => {
      await executeCommands({stateDir: ctx.stateDir, clock: ctx.clock, log: ctx.log, io}, commands)
    },
    log: ctx.log,
  })
}

/**
 * The client with each call's outcome reported: a refusal code (CERT_REVOKED, CERT_EXPIRED), null
 * when HQ accepted the call, undefined for other failures (HQ being down says nothing about this node).
 */
function watchRefusals(client: HqClient, seen: (r: {code: string; message: string} | null | undefined) => void): HqClient {
  return new Proxy(client, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function' || prop === 'close' || prop === 'constructor') return value
      return (...args: unknown[]) => {
        const out: unknown = (value as (...a: unknown[]) => unknown).apply(target, args)
        if (!(out instanceof Promise)) return out
        return out.then(
          (v: unknown) => {
            seen(null)
            return v
          },
          (err: unknown) => {
            seen(err instanceof JilError && REFUSAL_CODES.has(err.code) ? {code: err.code, message: err.message} : undefined)
            throw err
          },
        )
      }
    },
  })
}
