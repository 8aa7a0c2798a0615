import {JilError} from '../../shared/errors.js'
import {compareVersions} from '../../shared/manifest.js'
import type {FileLock} from '../../shared/files.js'
import {DESIRED_STATE_HINTS, verifyDesiredState, type DesiredState, type DesiredStateFailure, type RunMode} from '../../shared/stack.js'
import {applyDesiredConfig, type ConfigApplyResult} from '../config-files.js'
import {applyReconcile, planReconcile, runningVersions, type ServiceOutcome} from '../reconcile.js'
import {lockContainersWhenFree, readAgentRecord, readAppliedDesiredState, writeAgentRecord, writeAppliedDesiredState} from '../state.js'
import type {ManagedContainer} from '../runtime.js'
import {loadTrust, type NodeTrust} from '../trust.js'
import type {Agent, AgentContext, AgentOutcome, Finding} from './types.js'

/**
 * The image update agent (issue 6, item 7): fetch the signed desired state, verify it, keep it as
 * applied, and reconcile the node to it. The daemon's schedule, cron's `jil agent run update` and
 * the fleet's `refresh` command all go through reconcileNow.
 */

export type UpdateResult =
  | {status: 'refused'; sequence: number | null; code: DesiredStateFailure; message: string}
  | {
      status: 'applied'
      sequence: number
      run_mode: RunMode
      actions: ServiceOutcome[]
      unresolved: string[]
      services: number
      /** What writing the document's config did; absent when the document carries none (an older HQ). */
      config?: ConfigApplyResult
    }

/**
 * Verifies a desired state against what the node has applied and runs, and when it holds, records
 * it as applied and reconciles to it. A refused document changes nothing.
 */
export async function applyDesiredState(ctx: AgentContext, doc: DesiredState, trust: NodeTrust): Promise<UpdateResult> {
  const lock = await lockForUpdate(ctx)
  try {
    const rt = await ctx.runtime()
    const containers = await rt.list(ctx.nodeId)
    const applied = await readAppliedDesiredState(ctx.stateDir)
    const {identity} = await ctx.identity()
    const floors = (await readAgentRecord<Record<string, string>>(ctx.stateDir, FLOORS)) ?? {}
    const verdict = verifyDesiredState(doc, {
      keys: trust.keys,
      nodeId: ctx.nodeId,
      track: identity.track,
      zone: identity.zone,
      now: ctx.clock.now(),
      lastSequence: applied?.sequence ?? 0,
      running: runningVersions(ctx.nodeId, containers),
      floors: new Map(Object.entries(floors)),
      caPem: trust.caPem,
      isRevoked: trust.isRevoked,
    })
    if (!verdict.ok) {
      ctx.log.warn({code: verdict.code, message: verdict.message}, 'desired state refused')
      return {status: 'refused', sequence: typeof doc?.sequence === 'number' ? doc.sequence : null, code: verdict.code, message: verdict.message}
    }
    await writeAppliedDesiredState(ctx.stateDir, doc)
    // Config first, in every run mode, so that services created or replaced below start on it.
    const config = doc.config === undefined ? undefined : await applyDesiredConfig(ctx.stateDir, doc.config_version, doc.config)
    if (config && !config.ok) ctx.log.error({code: config.error.code, message: config.error.message}, 'config not applied')
    // A refused service (a lower version without a valid rollback) keeps what it runs; the rest of
    // the document, run mode included, still applies.
    const refusedNames = new Set(verdict.refused.map((r) => r.service))
    const plan = planReconcile(doc, containers).filter((a) => !(refusedNames.has(a.service) && (a.kind === 'create' || a.kind === 'replace')))
    const actions = await applyReconcile(ctx, doc, plan, trust)
    const byName = new Map(doc.services.map((x) => [x.name, x]))
    for (const r of verdict.refused) {
      const s = byName.get(r.service)
      const c = containers.find((x) => x.service === r.service && x.nodeId === ctx.nodeId)
      actions.push({service: r.service, action: 'replace', from: c ? {version: c.version, digest: c.digest} : null, to: {version: s?.version ?? null, digest: s?.digest ?? null}, outcome: 'refused', error: {code: r.code, message: r.message}})
    }
    await writeAgentRecord(ctx.stateDir, FLOORS, nextFloors(floors, doc, await rt.list(ctx.nodeId)))
    return {status: 'applied', sequence: doc.sequence, run_mode: doc.run_mode, actions, unresolved: doc.unresolved ?? [], services: doc.services.length, ...(config ? {config} : {})}
  } finally {
    await lock.release()
  }
}

/**
 * The containers lock for an update. A health run holds it only for its restarts (seconds): wait for
 * it. Another update holds it for a whole reconcile: UPDATE_BUSY (the next run picks up the latest).
 */
async function lockForUpdate(ctx: AgentContext): Promise<FileLock> {
  try {
    return await lockContainersWhenFree(ctx.stateDir, 'update', {waitMs: 60_000, signal: ctx.signal, waitFor: (holder) => holder === 'health'})
  } catch (err) {
    if (!(err instanceof JilError && err.code === 'CONTAINERS_BUSY')) throw err
    throw new JilError('UPDATE_BUSY', `${err.message}; ${ctx.nodeId} is not updated now`, {hint: 'wait for it to finish; the next run picks up the latest desired state'})
  }
}

/** agents/update-floors.json: image → the lowest version the node's services of that image run. */
const FLOORS = 'update-floors'

/**
 * The version floor of each image after a reconcile: the lowest version its listed services run
 * (services of one image may be pinned apart). Images no longer listed keep their floor, so removing
 * a service and adding it back lower, or under another name, still needs a signed rollback.
 */
export function nextFloors(previous: Readonly<Record<string, string>>, doc: DesiredState, containers: readonly ManagedContainer[]): Record<string, string> {
  const out: Record<string, string> = {...previous}
  const running = runningVersions(doc.node_id, containers)
  const byImage = new Map<string, string[]>()
  for (const s of doc.services) {
    const v = running.get(s.name)
    if (v) byImage.set(s.image, [...(byImage.get(s.image) ?? []), v])
  }
  for (const [image, versions] of byImage) out[image] = versions.sort(compareVersions)[0]!
  return out
}

/** One reconcile against HQ's current desired state. HQ unreachable = a JilError (the run fails). */
export async function reconcileNow(ctx: AgentContext): Promise<UpdateResult> {
  const doc = await (await ctx.hq()).desiredState()
  const trust = await loadTrust(ctx, {refresh: true})
  return applyDesiredState(ctx, doc, trust)
}

const versionOf = (x: {version: string | null} | null) => x?.version ?? '?'

/** The report of an update run: a summary line, findings for what an operator must look at, the outcomes. */
export function updateReport(r: UpdateResult): AgentOutcome {
  if (r.status === 'refused') {
    return {
      summary: `desired state ${r.sequence ?? '?'} refused (${r.code}): the node keeps running what it runs`,
      findings: [
        {
          id: 'desired-state-refused',
          severity: 'critical',
          title: `Desired state refused: ${r.code}`,
          evidence: `${r.code}: ${r.message}`,
          remediation: DESIRED_STATE_HINTS[r.code],
        },
      ],
      details: {sequence: r.sequence, refused: {code: r.code, message: r.message}, actions: []},
    }
  }

  const findings: Finding[] = []
  const touched = new Set(r.actions.filter((a) => a.action !== 'remove').map((a) => a.service))
  const parts: string[] = []
  const ok = (kind: ServiceOutcome['action']) => r.actions.filter((a) => a.action === kind && a.outcome === 'ok')
  const upToDate = r.services - touched.size
  if (r.run_mode === 'paused') parts.push(`paused: ${r.services} services left as they run`)
  else parts.push(`${upToDate} service${upToDate === 1 ? '' : 's'} up to date`)
  const created = ok('create')
  if (created.length) parts.push(`${created.length} created (${created.map((a) => `${a.service} ${versionOf(a.to)}`).join(', ')})`)
  const updated = ok('replace')
  if (updated.length) parts.push(`${updated.length} updated (${updated.map((a) => `${a.service} ${versionOf(a.from)} → ${versionOf(a.to)}`).join(', ')})`)
  for (const [kind, word] of [['start', 'started'], ['stop', 'stopped'], ['restore', 'restored'], ['remove', 'removed']] as const) {
    const n = ok(kind).length
    if (n) parts.push(`${n} ${word}`)
  }
  const failed = r.actions.filter((a) => a.outcome === 'failed')
  if (failed.length) parts.push(`${failed.length} failed (${failed.map((a) => `${a.service} ${a.action}: ${a.error?.code ?? 'error'}`).join(', ')})`)
  const refused = r.actions.filter((a) => a.outcome === 'refused')
  if (refused.length) parts.push(`${refused.length} refused (${refused.map((a) => a.service).join(', ')})`)

  for (const a of refused) {
    if (a.error?.code === 'DS_ROLLBACK_UNSIGNED') {
      findings.push({
        id: `rollback-unsigned:${a.service}`,
        severity: 'critical',
        title: `${a.service} not moved down to ${versionOf(a.to)}: no valid signed rollback`,
        evidence: a.error.message.slice(0, 4000),
        remediation: `an ops-lead pins the lower version with a signed rollback (jil hq stack pin … --rollback); ${a.service} keeps running what it runs`,
      })
      continue
    }
    findings.push({
      id: `unsigned-image:${a.service}`,
      severity: 'critical',
      title: `Image for ${a.service} refused: not signed for this node's track`,
      evidence: `${a.to?.digest ?? '?'} (${versionOf(a.to)}): ${a.error?.code ?? 'UNSIGNED'}: ${a.error?.message ?? ''}`.slice(0, 4000),
      remediation: `sign or promote that digest onto the track (jil hq sign / jil hq promote) or fix the stack; ${a.service} keeps running what it runs`,
    })
  }
  for (const a of failed) {
    const replaced = a.action === 'replace' && a.error?.code !== 'RESTORE_FAILED'
    findings.push({
      id: `update-failed:${a.service}`,
      // A failed replace left the old container running; anything else may leave the service down.
      severity: replaced ? 'warning' : 'critical',
      title: replaced ? `Update of ${a.service} to ${versionOf(a.to)} failed: the previous version was restored` : `${a.action} of ${a.service} failed`,
      evidence: `${a.error?.code ?? 'error'}: ${a.error?.message ?? ''}`.slice(0, 4000),
      remediation: replaced ? 'fix the new version (its health check or start-up), then sign a new one; the node retries on the next run' : 'see the Docker engine and the container log; the next update run retries',
    })
  }
  if (r.unresolved.length) parts.push(`${r.unresolved.length} unresolved (${r.unresolved.join(', ')})`)
  const c = r.config
  if (c && !c.ok) {
    parts.push(`config v${c.config_version} not applied (${c.error.code})`)
    findings.push({
      id: 'config-not-applied',
      severity: 'critical',
      title: `Config v${c.config_version} could not be written: the node keeps config v${c.previous_version}`,
      evidence: `${c.error.code}: ${c.error.message}`.slice(0, 4000),
      remediation: "check the node's state dir (config/ under it: space, permissions); the next update run retries",
    })
  } else if (c && (c.written.length || c.removed.length || c.config_version !== c.previous_version)) {
    parts.push(`config v${c.config_version} applied (${c.written.length} written, ${c.removed.length} removed)`)
  }
  const summary = parts.join(', ')
  return {
    summary: summary.length > 1000 ? summary.slice(0, 999) + '…' : summary,
    findings,
    details: {sequence: r.sequence, run_mode: r.run_mode, actions: r.actions, unresolved: r.unresolved, ...(c ? {config: c} : {})},
  }
}

/**
 * An update run. Config that could not be written fails the run (after the services were
 * reconciled), so a refresh answers failed and HQ audits it, as for a failed service update.
 */
export const updateAgent: Agent = async (ctx) => {
  const r = await reconcileNow(ctx)
  const out = updateReport(r)
  if (r.status === 'applied' && r.config && !r.config.ok) {
    throw new JilError(r.config.error.code, `${out.summary}: ${r.config.error.message}`.slice(0, 900), {hint: "check the node's state dir (config/ under it: space, permissions); the next update run retries"})
  }
  return out
}
