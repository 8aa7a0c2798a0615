import {setTimeout as sleep} from 'node:timers/promises'

import type {CommandStatus, CommandTarget, FleetCommand, NodeCommandName} from '../shared/api.js'
import {JilError, messageOf, usageError} from '../shared/errors.js'
import type {HqClient} from '../shared/hq-client.js'
import {parseNodeId, parseZoneFlag} from './rollouts.js'

// What `jil fleet broadcast` and `jil top`'s Broadcast view share: the target, the sending, and
// following each node's answer.

export const BROADCAST_COMMANDS = ['refresh', 'cycle', 'pause', 'resume', 'reboot'] as const satisfies readonly NodeCommandName[]

/** One node's answer: `timeout` when HQ had none by the end of the wait, `refused` when HQ refused that node. */
export type BroadcastRow = {node_id: string; command_id: string | null; status: CommandStatus | 'timeout' | 'refused'; summary: string; error: {code: string; message: string} | null}

export type FleetBroadcastResult = {command: NodeCommandName; target: string; results: BroadcastRow[]; ok: boolean}

const FINISHED: ReadonlySet<CommandStatus> = new Set(['succeeded', 'failed', 'expired'])

/** Exactly one of --all, --jurisdiction ZONE, --node ID → the target HQ takes. */
export function broadcastTarget(flags: {all?: boolean | undefined; jurisdiction?: string | undefined; node?: string | undefined}): CommandTarget {
  const given = [flags.all ? 'all' : null, flags.jurisdiction !== undefined ? 'jurisdiction' : null, flags.node !== undefined ? 'node' : null].filter(Boolean)
  if (given.length !== 1) {
    throw usageError('TARGET_REQUIRED', given.length === 0 ? 'say which nodes: --all, --jurisdiction ZONE or --node ID' : `give one target, not ${given.map((g) => `--${g}`).join(' and ')}`, 'e.g. jil fleet broadcast refresh --jurisdiction CH/FINMA')
  }
  if (flags.all) return {all: true}
  if (flags.jurisdiction !== undefined) return {zone: parseZoneFlag(flags.jurisdiction)}
  return {node: parseNodeId(flags.node!, '--node')}
}

export type BroadcastOptions = {
  /** How long to follow the answers (0: send only; they arrive later, e.g. on the live stream). */
  waitMs: number
  pollMs?: number
  /** Each node's final answer (or refusal), as it arrives. */
  onResult?: (r: BroadcastRow) => void
  /** Milliseconds now, for the wait's deadline (default Date.now). */
  now?: () => number
}

/**
 * Sends the command and follows its answers. Pause and resume go through the run-mode action of
 * every target node (so they persist in the desired state); the others are plain commands, one
 * per node. Each answer is passed to `onResult` as it arrives.
 */
export async function broadcast(client: HqClient, command: NodeCommandName, target: CommandTarget, o: BroadcastOptions): Promise<FleetBroadcastResult> {
  const now = o.now ?? Date.now
  const targetName = 'all' in target ? 'all' : 'zone' in target ? `zone/${target.zone}` : `node/${target.node}`
  const rows = new Map<string, BroadcastRow>()
  if (command === 'pause' || command === 'resume') {
    const nodes =
      'node' in target
        ? [target.node]
        : (await client.fleetNodes('zone' in target ? {zone: target.zone} : {})).nodes.filter((n) => n.status !== 'pending' && n.status !== 'revoked').map((n) => n.id)
    if (nodes.length === 0) throw new JilError('NO_NODES', `no active node in ${targetName}`, {hint: 'see jil fleet nodes'})
    for (const id of nodes) {
      try {
        const change = await client.runModeAction(id, command)
        rows.set(change.command_id, {node_id: id, command_id: change.command_id, status: 'pending', summary: change.message, error: null})
      } catch (err) {
        // One node refused: a single target is the whole answer; in a fan-out the others go on.
        if ('node' in target) throw err
        const e = err instanceof JilError ? err : new JilError('FAILED', messageOf(err))
        const row: BroadcastRow = {node_id: id, command_id: null, status: 'refused', summary: e.message, error: {code: e.code, message: e.message}}
        rows.set(`refused:${id}`, row)
        o.onResult?.(row)
      }
    }
  } else {
    const sent = await client.sendCommand(command, target)
    for (const c of sent.commands) rows.set(c.id, {node_id: c.node_id, command_id: c.id, status: c.status, summary: '', error: null})
  }

  const open = () => [...rows.values()].filter((r) => r.command_id && !FINISHED.has(r.status as CommandStatus) && r.status !== 'timeout')
  const deadline = now() + o.waitMs
  while (o.waitMs > 0 && open().length > 0) {
    for (const c of await latest(client, open())) {
      const row = rows.get(c.id)
      if (!row || row.status === c.status) continue
      row.status = c.status
      row.summary = c.result?.summary ?? (c.status === 'expired' ? 'expired before the node picked it up' : '')
      row.error = c.result?.error ?? (c.status === 'expired' ? {code: 'COMMAND_EXPIRED', message: 'the node did not pick it up in time'} : null)
      if (FINISHED.has(c.status)) o.onResult?.(row)
    }
    if (open().length === 0 || now() >= deadline) break
    await sleep(Math.min(o.pollMs ?? 1_000, Math.max(0, deadline - now())))
  }
  if (o.waitMs > 0) {
    for (const r of open()) {
      r.status = 'timeout'
      r.summary = `no answer within ${Math.round(o.waitMs / 1000)} s`
      r.error = {code: 'TIMEOUT', message: r.summary}
    }
  }
  const results = [...rows.values()].sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0))
  return {command, target: targetName, results, ok: results.every((r) => r.status === 'succeeded' || (o.waitMs === 0 && r.status !== 'refused'))}
}

/** The current state of the open commands: one list call (GET /v1/fleet/commands) when it covers them, else one call each. */
async function latest(client: HqClient, open: BroadcastRow[]): Promise<FleetCommand[]> {
  const nodes = new Set(open.map((r) => r.node_id))
  const ids = new Set(open.map((r) => r.command_id!))
  const listed = (await client.fleetCommands({...(nodes.size === 1 ? {node: [...nodes][0]!} : {}), limit: 1000})).commands.filter((c) => ids.has(c.id))
  const missing = [...ids].filter((id) => !listed.some((c) => c.id === id))
  return [...listed, ...(await Promise.all(missing.map((id) => client.fleetCommand(id))))]
}
