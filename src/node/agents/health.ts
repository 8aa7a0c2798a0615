import {AGENT_NAMES} from '../../shared/agents.js'
import type {AgentSummary, Finding, Heartbeat, HeartbeatService} from '../../shared/api.js'
import {JilError, messageOf} from '../../shared/errors.js'
import type {DesiredService, DesiredState} from '../../shared/stack.js'
import {readAppliedConfig} from '../config-files.js'
import {cometbftStatus, systemMetrics} from '../host.js'
import {renewNode} from '../identity.js'
import {isReplaceLeftover} from '../reconcile.js'
import {containerName, type ManagedContainer, type Runtime} from '../runtime.js'
import {lockContainers, readAgentRecord, readAppliedDesiredState, readLastReport, readSyncHeartbeat, writeAgentRecord} from '../state.js'
import type {Agent, AgentContext} from './types.js'

/**
 * The health agent (every minute): keeps the node's certificate renewed, restarts the node's
 * exited or unhealthy containers within a restart budget (a crash loop is reported, not hammered),
 * measures the host and posts the heartbeat. Only containers labelled with this node's id are seen.
 */

/** agents/health-restarts.json: when each service was restarted (kept across cron runs). */
export const RESTART_RECORD = 'health-restarts'
type RestartRecord = {services: Record<string, string[]>}

const BACKOFF_BASE_MS = 10_000
const BACKOFF_MAX_MS = 5 * 60_000

export type RestartDecision = {action: 'restart'} | {action: 'backoff'; until: Date; restarts: number} | {action: 'crash-loop'; restarts: number}

/**
 * Whether to restart a service that is down, given its restarts within the window: at most
 * `budget` of them, and after the n-th a wait of min(10 s × 2^(n−1), 5 min). Pure.
 */
export function restartDecision(history: readonly Date[], now: Date, o: {budget: number; windowMs: number}): RestartDecision {
  const recent = history.filter((t) => now.getTime() - t.getTime() < o.windowMs)
  if (recent.length >= o.budget) return {action: 'crash-loop', restarts: recent.length}
  if (recent.length === 0) return {action: 'restart'}
  const last = Math.max(...recent.map((t) => t.getTime()))
  const wait = Math.min(BACKOFF_BASE_MS * 2 ** (recent.length - 1), BACKOFF_MAX_MS)
  return now.getTime() - last < wait ? {action: 'backoff', until: new Date(last + wait), restarts: recent.length} : {action: 'restart'}
}

type Counts = Heartbeat['containers']

function countContainers(cs: readonly ManagedContainer[]): Counts {
  const c: Counts = {total: cs.length, running: 0, healthy: 0, unhealthy: 0, exited: 0, restarting: 0, other: 0}
  for (const x of cs) {
    if (x.state === 'running') c.running++
    else if (x.state === 'exited') c.exited++
    else if (x.state === 'restarting') c.restarting++
    else c.other++
    if (x.health === 'healthy') c.healthy++
    else if (x.health === 'unhealthy') c.unhealthy++
  }
  return c
}

function isDown(c: ManagedContainer): boolean {
  return c.state === 'exited' || c.state === 'dead' || (c.state === 'running' && c.health === 'unhealthy')
}

function describeDown(c: ManagedContainer): string {
  return c.state === 'running' ? 'unhealthy' : c.state
}

/** One heartbeat entry per service: the desired ones (no container = missing) and any other labelled ones. */
function heartbeatServices(nodeId: string, containers: readonly ManagedContainer[], desired: DesiredState | undefined): HeartbeatService[] {
  const byService = new Map<string, ManagedContainer[]>()
  for (const c of containers) byService.set(c.service, [...(byService.get(c.service) ?? []), c])
  const names = [...new Set([...(desired?.services.map((s) => s.name) ?? []), ...byService.keys()])]
  return names.map((name) => {
    const spec = desired?.services.find((s) => s.name === name)
    const cs = byService.get(name) ?? []
    // During an update a service has two containers: report the one serving (running, canonical name).
    const c = cs.find((x) => x.state === 'running' && x.name === containerName(nodeId, name)) ?? cs.find((x) => x.state === 'running') ?? cs[0]
    if (!c) return {name, critical: spec?.critical ?? false, state: 'missing', health: 'none', digest: null, version: null}
    return {name, critical: spec?.critical ?? c.critical, state: c.state, health: c.health, digest: c.digest, version: c.version}
  })
}

async function agentSummaries(stateDir: string): Promise<Heartbeat['agents']> {
  const out: Heartbeat['agents'] = {}
  for (const name of AGENT_NAMES) {
    const r = await readLastReport(stateDir, name)
    if (!r) continue
    const summary: AgentSummary = {
      at: r.finished_at,
      ok: r.ok,
      summary: r.summary.slice(0, 1000),
      critical: r.findings.filter((f) => f.severity === 'critical').length,
      warning: r.findings.filter((f) => f.severity === 'warning').length,
    }
    out[name] = summary
  }
  return out
}

/** Renewal at 2/3 of the certificate's lifetime, so a cron-only node never expires. A failure is a finding, not a failed run. */
async function renewIfDue(ctx: AgentContext): Promise<{renewed: boolean; serial: string | null; finding?: Finding}> {
  try {
    const r = await renewNode({stateDir: ctx.stateDir, clock: ctx.clock, ifDue: true})
    if (r.renewed) ctx.log.info({serial: r.serial, previous: r.previous_serial}, 'node certificate renewed')
    return {renewed: r.renewed, serial: r.serial}
  } catch (err) {
    const e = err instanceof JilError ? err : undefined
    // Another process (the daemon's own renewal, `jil node renew`) holds the state dir: it renews.
    const busy = e?.code === 'STATE_DIR_BUSY'
    return {
      renewed: false,
      serial: null,
      finding: {
        id: 'cert-renewal',
        severity: busy ? 'warning' : 'critical',
        title: busy ? 'certificate renewal skipped: the state dir is busy' : 'the node certificate could not be renewed',
        evidence: `${e?.code ?? 'ERROR'}: ${messageOf(err)}`.slice(0, 4000),
        remediation: e?.hint ?? 'check HQ is reachable, then run jil node renew',
      },
    }
  }
}

type Restarts = {restarted: string[]; crashLoops: string[]; deferred: string[]; failed: string[]; findings: Finding[]; skipped?: true}

/** Restarts what is down, within each service's budget; the record of restarts is kept across runs. */
async function restartDown(ctx: AgentContext, runtime: Runtime, containers: readonly ManagedContainer[], desired: DesiredState | undefined): Promise<Restarts> {
  const out: Restarts = {restarted: [], crashLoops: [], deferred: [], failed: [], findings: []}
  if (desired?.run_mode === 'stopped') return out
  const wanted = desired ? new Map<string, DesiredService>(desired.services.map((s) => [s.name, s])) : undefined
  const perService = new Map<string, ManagedContainer[]>()
  for (const c of containers) perService.set(c.service, [...(perService.get(c.service) ?? []), c])

  const record = (await readAgentRecord<RestartRecord>(ctx.stateDir, RESTART_RECORD)) ?? {services: {}}
  const now = ctx.clock.now()
  const {restartBudget: budget, restartWindowMs: windowMs} = ctx.settings
  let changed = false
  // Forget restarts that have left the window (and services that are gone).
  for (const [name, times] of Object.entries(record.services)) {
    const kept = times.filter((t) => now.getTime() - new Date(t).getTime() < windowMs)
    if (kept.length !== times.length) changed = true
    if (kept.length) record.services[name] = kept
    else delete record.services[name]
  }

  for (const [service, cs] of perService) {
    // Not in the desired state: the update agent removes it. Two containers: an update is in flight and owns them.
    if (wanted && !wanted.has(service)) continue
    if (cs.length !== 1) continue
    const c = cs[0]!
    // An old container set aside by an update (renamed, stopped) is the update's until it restores or removes it.
    if (isReplaceLeftover(ctx.nodeId, c)) continue
    if (!isDown(c)) continue
    const history = (record.services[service] ?? []).map((t) => new Date(t))
    const d = restartDecision(history, now, {budget, windowMs})
    const what = describeDown(c)
    if (d.action === 'crash-loop') {
      const details = await runtime.inspect(c.id).catch(() => undefined)
      out.crashLoops.push(service)
      out.findings.push({
        id: `crash-loop:${service}`,
        severity: 'critical',
        title: `${service} is crash-looping: left ${what}, not restarted`,
        evidence: `${c.name} is ${what}${details?.exitCode != null ? ` (exit code ${details.exitCode})` : ''} after ${d.restarts} restarts within ${Math.round(windowMs / 60_000)} min (budget ${budget})`,
        remediation: `read its log (docker logs ${c.name}); the health agent restarts it again once the restarts leave the ${Math.round(windowMs / 60_000)}-minute window`,
      })
      continue
    }
    if (d.action === 'backoff') {
      out.deferred.push(service)
      out.findings.push({
        id: `container-down:${service}`,
        severity: 'warning',
        title: `${service} is ${what}; restart deferred (backoff)`,
        evidence: `${c.name} is ${what}; ${d.restarts} restart(s) within the window, next not before ${d.until.toISOString()}`,
        remediation: `read its log (docker logs ${c.name})`,
      })
      continue
    }
    record.services[service] = [...(record.services[service] ?? []), now.toISOString()]
    changed = true
    try {
      await runtime.restart(c.id)
      out.restarted.push(service)
      ctx.log.info({service, container: c.name, was: what}, 'container restarted')
      out.findings.push({
        id: `container-restarted:${service}`,
        severity: 'warning',
        title: `${service} was ${what} and has been restarted`,
        evidence: `${c.name} was ${what}; restart ${history.length + 1} of ${budget} within the window`,
        remediation: `read its log (docker logs ${c.name}) if it keeps happening`,
      })
    } catch (err) {
      // A failed restart spends budget too: a container that cannot start must not be retried every minute forever.
      if (err instanceof JilError && err.code === 'DOCKER_UNREACHABLE') throw err
      out.failed.push(service)
      out.findings.push({
        id: `restart-failed:${service}`,
        severity: 'critical',
        title: `${service} is ${what} and could not be restarted`,
        evidence: messageOf(err).slice(0, 4000),
        remediation: 'the update agent recreates it from the desired state; see the Docker engine log',
      })
    }
  }
  if (changed) await writeAgentRecord(ctx.stateDir, RESTART_RECORD, record)
  return out
}

export const healthAgent: Agent = async (ctx) => {
  const findings: Finding[] = []
  // Measuring takes ~0.5 s (CPU sampling): let it run while the engine is asked.
  const metrics = systemMetrics({diskPath: ctx.settings.diskPath})
  metrics.catch(() => {}) // awaited below; a failure must not be an unhandled rejection when Docker fails first
  const consensus = ctx.settings.cometbftUrl ? cometbftStatus(ctx.settings.cometbftUrl) : undefined

  const renewal = await renewIfDue(ctx)
  if (renewal.finding) findings.push(renewal.finding)

  const runtime = await ctx.runtime()
  // Restarts wait for no one: while an update changes the containers, this run only reports.
  const lock = await lockContainers(ctx.stateDir, 'health').catch((err: unknown) => {
    if (err instanceof JilError && err.code === 'CONTAINERS_BUSY') return undefined
    throw err
  })
  let desired: DesiredState | undefined
  let containers: ManagedContainer[]
  let r: Restarts
  try {
    desired = await readAppliedDesiredState(ctx.stateDir)
    containers = await runtime.list(ctx.nodeId)
    r = lock ? await restartDown(ctx, runtime, containers, desired) : {restarted: [], crashLoops: [], deferred: [], failed: [], findings: [], skipped: true}
    if (r.restarted.length || r.failed.length) containers = await runtime.list(ctx.nodeId)
  } finally {
    await lock?.release()
  }
  findings.push(...r.findings)
  const counts = countContainers(containers)

  const id = await ctx.identity()
  const hb: Heartbeat = {
    node_id: ctx.nodeId,
    time: ctx.clock.now().toISOString(),
    agent_version: ctx.version,
    run_mode: desired?.run_mode ?? 'running',
    desired_sequence: desired?.sequence ?? 0,
    // A damaged or unreadable record counts as none: the next update run writes it again.
    config_version: (await readAppliedConfig(ctx.stateDir).catch(() => undefined))?.config_version ?? 0,
    containers: counts,
    services: heartbeatServices(ctx.nodeId, containers, desired),
    system: await metrics,
    cert: {serial: id.cert.serial, not_after: id.cert.notAfter.toISOString()},
    agents: await agentSummaries(ctx.stateDir),
    ...(consensus ? {consensus: await consensus} : {}),
  }
  // Event sync runs in the daemon (or `jil node sync run`); its last status file feeds the heartbeat.
  const sync = ctx.settings.sync ? await readSyncHeartbeat(ctx.stateDir, ctx.clock.now()).catch(() => undefined) : undefined
  if (sync) hb.sync = sync
  // Before HQ: a node that cannot reach HQ still tells the bus it is alive. Never fails the run.
  const bus = ctx.publishStatus ? await ctx.publishStatus(hb).catch((err: unknown) => ({published: false as const, reason: messageOf(err)})) : undefined
  if (bus && !bus.published) ctx.log.debug({reason: bus.reason}, 'heartbeat not published on the bus')

  const did = r.skipped ? 'restarts skipped (an update is changing the containers)' : r.restarted.length ? `restarted ${r.restarted.join(', ')}` : 'nothing restarted'
  try {
    await (await ctx.hq()).heartbeat(hb)
  } catch (err) {
    // The restarts and the renewal stand; the run fails so that the missing heartbeat is seen.
    if (!(err instanceof JilError)) throw err
    throw new JilError(err.code, `heartbeat not sent (${err.message}); ${did}`.slice(0, 900), {...(err.hint ? {hint: err.hint} : {}), status: err.status, cause: err})
  }

  const commands = ctx.settings.commandsInHealthRun ? await runPendingCommands(ctx) : undefined
  if (commands?.finding) findings.push(commands.finding)

  const down = counts.total - counts.running + counts.unhealthy
  return {
    summary: `${counts.running}/${counts.total} containers running${down ? `, ${down} down or unhealthy` : ''}; ${did}${r.crashLoops.length ? `; crash-looping: ${r.crashLoops.join(', ')}` : ''}; heartbeat sent${commands?.ran.length ? `; ran ${commands.ran.join(', ')}` : ''}`.slice(0, 1000),
    findings,
    details: {
      restarted: r.restarted,
      deferred: r.deferred,
      crash_looping: r.crashLoops,
      restart_failed: r.failed,
      ...(r.skipped ? {restarts_skipped: 'update in progress'} : {}),
      containers: counts,
      cert: {serial: id.cert.serial, not_after: id.cert.notAfter.toISOString(), renewed: renewal.renewed},
      ...(hb.consensus ? {consensus: hb.consensus} : {}),
      heartbeat: 'sent',
      ...(bus ? {bus: bus.published ? 'published' : `not published: ${bus.reason}`.slice(0, 300)} : {}),
      ...(commands ? {commands: commands.ran} : {}),
    },
  }
}

/**
 * Cron mode (no daemon, so no command loop): after its heartbeat the health run takes the node's
 * pending fleet commands without waiting and runs them. Failing to fetch them is a finding, not a
 * failed run: the heartbeat went out.
 */
async function runPendingCommands(ctx: AgentContext): Promise<{ran: string[]; finding?: Finding}> {
  try {
    const {pickUpCommands} = await import('../commands.js')
    const runs = await pickUpCommands(ctx)
    return {ran: runs.map((r) => `${r.command}${r.result.ok ? '' : ' (failed)'}`)}
  } catch (err) {
    return {
      ran: [],
      finding: {
        id: 'fleet-commands',
        severity: 'warning',
        title: 'fleet commands could not be fetched',
        evidence: `${err instanceof JilError ? err.code : 'ERROR'}: ${messageOf(err)}`.slice(0, 4000),
        remediation: 'the next health run tries again; check HQ is reachable',
      },
    }
  }
}
