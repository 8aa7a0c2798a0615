import {join} from 'node:path'

import {JilError} from '../../shared/errors.js'
import {lockFile} from '../../shared/files.js'
import {DESIRED_STATE_HINTS, verifyDesiredState, type DesiredState, type DesiredStateFailure, type RunMode} from '../../shared/stack.js'
import {applyReconcile, planReconcile, runningVersions, type ServiceOutcome} from '../reconcile.js'
import {readAppliedDesiredState, STATE_FILES, writeAppliedDesiredState} from '../state.js'
import {loadTrust, type NodeTrust} from '../trust.js'
import type {Agent, AgentContext, AgentOutcome, Finding} from './types.js'

/**
 * The image update agent (issue 6, item 7): fetch the signed desired state, verify it, keep it as
 * applied, and reconcile the node to it. The daemon's schedule, cron's `jil agent run update` and
 * the fleet's `refresh` command all go through reconcileNow.
 */

export type UpdateResult =
  | {status: 'refused'; sequence: number | null; code: DesiredStateFailure; message: string; service?: string}
  | {status: 'applied'; sequence: number; run_mode: RunMode; actions: ServiceOutcome[]; unresolved: string[]; services: number}

/**
 * Verifies a desired state against what the node has applied and runs, and when it holds, records
 * it as applied and reconciles to it. A refused document changes nothing.
 */
export async function applyDesiredState(ctx: AgentContext, doc: DesiredState, trust: NodeTrust): Promise<UpdateResult> {
  const lock = await lockFile(join(ctx.stateDir, STATE_FILES.updateLock), 'jil update', (other) => {
    return new JilError('UPDATE_BUSY', `another update of ${ctx.nodeId} is running (pid ${other.pid})`, {hint: 'wait for it to finish; the next run picks up the latest desired state'})
  })
  try {
    const rt = await ctx.runtime()
    const containers = await rt.list(ctx.nodeId)
    const applied = await readAppliedDesiredState(ctx.stateDir)
    const verdict = verifyDesiredState(doc, {
      keys: trust.keys,
      nodeId: ctx.nodeId,
      now: ctx.clock.now(),
      lastSequence: applied?.sequence ?? 0,
      running: runningVersions(ctx.nodeId, containers),
      caPem: trust.caPem,
      isRevoked: trust.isRevoked,
    })
    if (!verdict.ok) {
      ctx.log.warn({code: verdict.code, message: verdict.message}, 'desired state refused')
      return {status: 'refused', sequence: typeof doc?.sequence === 'number' ? doc.sequence : null, code: verdict.code, message: verdict.message, ...(verdict.service ? {service: verdict.service} : {})}
    }
    await writeAppliedDesiredState(ctx.stateDir, doc)
    const actions = await applyReconcile(ctx, doc, planReconcile(doc, containers), trust)
    return {status: 'applied', sequence: doc.sequence, run_mode: doc.run_mode, actions, unresolved: doc.unresolved ?? [], services: doc.services.length}
  } finally {
    await lock.release()
  }
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
      details: {sequence: r.sequence, refused: {code: r.code, message: r.message, ...(r.service ? {service: r.service} : {})}, actions: []},
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
  const summary = parts.join(', ')
  return {summary: summary.length > 1000 ? summary.slice(0, 999) + '…' : summary, findings, details: {sequence: r.sequence, run_mode: r.run_mode, actions: r.actions, unresolved: r.unresolved}}
}

export const updateAgent: Agent = async (ctx) => updateReport(await reconcileNow(ctx))
