import {setTimeout as sleep} from 'node:timers/promises'

import type {RollbackPlan, RolloutPlan, RolloutView, UpgradeRequest} from '../shared/api.js'
import type {UserBundle} from '../shared/bundle.js'
import {JilError, usageError} from '../shared/errors.js'
import type {HqClient} from '../shared/hq-client.js'
import {NODE_ID_PATTERN} from '../shared/ids.js'
import type {UserSignature} from '../shared/user-signature.js'
import {ZONE_ANY_FORM_PATTERN, zoneFromPath} from '../shared/zones.js'

/** `--jurisdiction CH/FINMA` (or CH_FINMA, any case) → CH/FINMA. */
export function parseZoneFlag(value: string, flag = '--jurisdiction'): string {
  const zone = value.toUpperCase()
  if (!ZONE_ANY_FORM_PATTERN.test(zone)) throw usageError('ZONE_INVALID', `${flag} ${JSON.stringify(value)} is not a zone`, 'zones look like CH/FINMA')
  return zoneFromPath(zone)
}

/** A node id as given on the command line (any case) → CH-ZUG-01. */
export function parseNodeId(value: string, what = 'the node id'): string {
  const id = value.toUpperCase()
  if (!NODE_ID_PATTERN.test(id)) throw usageError('NODE_ID_INVALID', `${what} ${JSON.stringify(value)} is not a node id`, 'node ids look like CH-ZUG-01 (see jil fleet nodes)')
  return id
}

export const OPEN_STATES: ReadonlySet<string> = new Set(['running', 'paused', 'reverting'])

export function isPlan(r: RolloutView | RolloutPlan): r is RolloutPlan {
  return !('id' in r)
}

async function signAll(me: UserBundle, payloads: readonly Record<string, unknown>[]): Promise<UserSignature[]> {
  const {signAsUser} = await import('../shared/user-signature.js')
  return payloads.map((p) => signAsUser(p as Record<string, unknown> & {purpose: string}, me))
}

/**
 * Starts a rollout. With auto-revert, HQ cannot sign a downgrade on its own: a dry run lists the
 * rollbacks the revert would need, the caller's key signs each, and the rollout carries them.
 */
export async function startUpgrade(client: HqClient, me: UserBundle, target: {node: string} | {zone: string}, req: UpgradeRequest): Promise<RolloutView | RolloutPlan> {
  if (req.dry_run || !req.auto_revert) return client.upgrade(target, req)
  const plan = await client.upgrade(target, {...req, dry_run: true})
  if (!isPlan(plan)) throw new JilError('INTERNAL', 'HQ answered a dry run with a rollout')
  return client.upgrade(target, {...req, revert_signatures: await signAll(me, plan.revert_payloads)})
}

/** Rolls a node back: HQ plans it, the caller's key signs each downgrade, HQ pins them and sends a refresh. */
export async function rollbackNode(client: HqClient, me: UserBundle, nodeId: string, o: {service?: string | undefined; dryRun: boolean}): Promise<RollbackPlan> {
  const body = o.service ? {service: o.service} : {}
  const plan = await client.rollbackNode(nodeId, {...body, dry_run: true})
  if (o.dryRun) return plan
  return client.rollbackNode(nodeId, {...body, signatures: await signAll(me, plan.payloads)})
}

/** The rollout a command means: the one given, else the only open one. */
export async function resolveRolloutId(client: HqClient, id: string | undefined): Promise<string> {
  if (id !== undefined) {
    if (!/^ro_[0-9a-z]{20}$/.test(id)) throw usageError('ROLLOUT_ID_INVALID', `${JSON.stringify(id)} is not a rollout id`, 'rollout ids look like ro_… (see jil fleet rollout status)')
    return id
  }
  const {rollouts} = await client.rollouts({open: true})
  if (rollouts.length === 1) return rollouts[0]!.id
  if (rollouts.length === 0) throw new JilError('NO_OPEN_ROLLOUT', 'no rollout is open', {hint: 'give a rollout id (jil fleet rollout status lists the recent ones)'})
  throw usageError('ROLLOUT_AMBIGUOUS', `${rollouts.length} rollouts are open: ${rollouts.map((r) => r.id).join(', ')}`, 'say which: jil fleet rollout … ROLLOUT_ID')
}

/**
 * Follows a rollout until it ends (or the signal aborts), calling onChange with each view that
 * differs from the one before. Returns the last view.
 */
export async function followRollout(client: HqClient, id: string, onChange: (v: RolloutView) => void, o: {pollMs?: number; signal?: AbortSignal} = {}): Promise<RolloutView> {
  let last = ''
  for (;;) {
    const v = await client.rollout(id)
    const key = JSON.stringify({s: v.state, n: v.nodes.map((n) => [n.state, n.healthy_since, n.error])})
    if (key !== last) {
      last = key
      onChange(v)
    }
    if (!OPEN_STATES.has(v.state) || o.signal?.aborted) return v
    try {
      await sleep(o.pollMs ?? 1_000, undefined, o.signal ? {signal: o.signal} : undefined)
    } catch {
      return v
    }
  }
}

const MARK: Record<string, string> = {pending: '·', upgrading: '↻', done: '✓', failed: '✗', reverting: '↺', reverted: '⤺', revert_failed: '✗', skipped: '–', halted: '■'}

function bar(done: number, total: number, width = 24): string {
  const filled = total === 0 ? width : Math.round((done / total) * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`
}

/** The live view of a rollout: a header, a progress bar, one line per node. */
export function rolloutLines(v: RolloutView, now: Date = new Date()): string[] {
  const total = v.nodes.length
  const done = v.counts.done ?? 0
  const target = v.target.zone ?? v.target.node ?? '?'
  const lines = [
    `${v.id}  ${v.image} ${v.version} → ${target}${v.target.track ? ` (${v.target.track})` : ''}  ${v.state.toUpperCase()}`,
    `${bar(done, total)} ${done}/${total} done  max-parallel ${v.max_parallel}, min-healthy ${v.min_healthy_s}s, health-timeout ${v.health_timeout_s}s${v.auto_revert ? ', auto-revert' : ''}${v.canary ? `, canary ${v.canary}` : ''}`,
  ]
  if (v.reason) lines.push(`  ${v.reason}`)
  for (const n of v.nodes) {
    const from = n.services.map((s) => s.from?.version ?? 'none').join(',')
    const since = n.state === 'upgrading' || n.state === 'reverting' ? (n.started_at ? ` ${Math.max(0, Math.round((now.getTime() - Date.parse(n.started_at)) / 1000))}s` : '') : ''
    const healthy = n.healthy_since && (n.state === 'upgrading' || n.state === 'reverting') ? ' healthy' : ''
    lines.push(`  ${MARK[n.state] ?? '?'} ${n.node_id.padEnd(14)} ${n.state.padEnd(13)} ${from} → ${v.version}${since}${healthy}${n.error ? `  ${n.error}` : ''}`)
  }
  return lines
}

/**
 * Writes a block of lines to a stream and, on a terminal, redraws it in place on the next call; off a
 * terminal (a log, a pipe) each new block is written below the last.
 */
export function liveBlock(stream: NodeJS.WriteStream): (lines: string[]) => void {
  let drawn = 0
  return (lines) => {
    if (stream.isTTY && drawn > 0) stream.write(`\x1b[${drawn}F\x1b[J`)
    stream.write(lines.join('\n') + '\n')
    drawn = lines.length
  }
}
