import {broadcast, type BroadcastRow} from '../cli/broadcast.js'
import {approveRelease, type ImageListRow} from '../cli/releases.js'
import {rollbackNode, startUpgrade, isPlan} from '../cli/rollouts.js'
import type {AlertView, SilenceRequest} from '../shared/alerts.js'
import type {CommandTarget, FleetNodeDetail, NodeCommandName, RunModeAction} from '../shared/api.js'
import type {UserBundle} from '../shared/bundle.js'
import {JilError} from '../shared/errors.js'
import type {FleetEvent} from '../shared/fleet-events.js'
import type {HqClient, StackView} from '../shared/hq-client.js'
import type {FleetSnapshot} from './model.js'

/** A node as the detail view shows it: HQ's detail, and its track's stack (the digests its versions map to). */
export type NodeDetailView = {node: FleetNodeDetail; stack: StackView | null}

/** A broadcast as sent: one row per node, each with the command id whose result arrives as a `commands` event. */
export type BroadcastSent = {command: NodeCommandName; target: string; rows: BroadcastRow[]}

/** Who is looking: the header shows it. */
export type SourceInfo = {hqUrl: string; user: string; role: string}

/**
 * Where `jil top` reads the fleet and sends its actions: HQ over mutual TLS (hqSource), or a fake in
 * tests and the bench. Actions answer with a one-line result or throw HQ's JilError (403 included).
 */
export interface FleetSource {
  readonly info: SourceInfo
  /** The list routes, loaded after each `ready`. */
  snapshot(signal?: AbortSignal): Promise<FleetSnapshot>
  /** The live stream: `ready` first, then changes; it ends or throws when the connection drops. */
  events(signal: AbortSignal): AsyncIterable<FleetEvent>
  nodeDetail(id: string): Promise<NodeDetailView>
  runMode(nodeId: string, action: RunModeAction): Promise<string>
  upgrade(nodeId: string, image: string): Promise<string>
  rollback(nodeId: string): Promise<string>
  revoke(nodeId: string, reason: string): Promise<string>
  approve(image: ImageListRow, track: 'testnet' | 'mainnet'): Promise<string>
  promote(image: ImageListRow, to: 'testnet' | 'mainnet'): Promise<string>
  ack(alertId: string): Promise<string>
  silence(req: SilenceRequest): Promise<string>
  broadcast(command: NodeCommandName, target: CommandTarget): Promise<BroadcastSent>
}

/**
 * The fleet at HQ, through the one HQ client and the same routes and helpers the CLI commands use:
 * upgrades and rollbacks are signed with the user's own key as `jil fleet upgrade|rollback` sign them,
 * approvals as `jil hq approve` does, broadcasts go out as `jil fleet broadcast` sends them.
 */
export function hqSource(client: HqClient, me: UserBundle): FleetSource {
  return {
    info: {hqUrl: client.baseUrl, user: me.name, role: me.role},

    async snapshot() {
      const [nodes, alerts, resolved, rollouts, commands, images] = await Promise.all([
        client.fleetNodes(),
        client.alerts({limit: 5000}),
        client.alerts({state: 'resolved', limit: 200}),
        client.rollouts({limit: 50}),
        client.fleetCommands({limit: 1000}),
        client.request<{images: ImageListRow[]}>('GET', '/v1/images'),
      ])
      return {nodes: nodes.nodes, alerts: [...alerts.alerts, ...resolved.alerts], rollouts: rollouts.rollouts, commands: commands.commands, images: images.images}
    },

    events(signal) {
      return client.events({signal})
    },

    async nodeDetail(id) {
      const node = await client.fleetNode(id)
      // The stack maps versions to digests; without it the view still shows the versions.
      const stack = await client.stack(node.track).catch(() => null)
      return {node, stack}
    },

    async runMode(nodeId, action) {
      return (await client.runModeAction(nodeId, action)).message
    },

    async upgrade(nodeId, image) {
      const r = await startUpgrade(client, me, {node: nodeId}, {image})
      return isPlan(r) ? `nothing started: ${r.nodes.length} node(s) planned` : `rollout ${r.id} started: ${r.image} ${r.version} → ${nodeId}`
    },

    async rollback(nodeId) {
      const r = await rollbackNode(client, me, nodeId, {dryRun: false})
      const moves = r.services.map((s) => `${s.service} ${s.from.version} → ${s.to.version}`).join(', ')
      return r.applied ? `${nodeId} rolled back: ${moves || 'nothing to roll back'}` : `${nodeId}: nothing rolled back`
    },

    async revoke(nodeId, reason) {
      const r = await client.revokeNode(nodeId, reason)
      return `revoked ${r.node_id}: ${r.serials.length} certificate(s) locked out`
    },

    async approve(image, track) {
      const r = await approveRelease(client, me, `${image.image}@${image.digest}`, track)
      return `approved ${image.image} ${image.version} for ${r.track} (approvers: ${r.approvers.join(', ')})`
    },

    async promote(image, to) {
      const m = await client.promoteImage(image.digest, to)
      return `promoted ${m.image} ${m.version} to ${m.track}`
    },

    async ack(alertId) {
      const a: AlertView = await client.ackAlert(alertId)
      return `alert ${a.id} (${a.rule} ${a.subject}) acked by ${a.acked_by ?? me.name}`
    },

    async silence(req) {
      const s = await client.silenceAlerts(req)
      return `silenced ${s.rule} on ${s.node_id ?? 'every node'} until ${s.expires_at}`
    },

    async broadcast(command, target) {
      // Send only: the answers arrive on the stream as `commands` events, not by polling.
      const r = await broadcast(client, command, target, {waitMs: 0})
      return {command: r.command, target: r.target, rows: r.results}
    },
  }
}

/** An action's failure as one line: HQ's code, status and message, and its hint (a 403 says which permission). */
export function describeError(err: unknown): {code: string; status: number | null; message: string} {
  if (err instanceof JilError) {
    // 400 is also what a JilError made on this side carries: only HQ's other answers say something.
    const status = err.status > 400 ? err.status : null
    return {code: err.code, status, message: err.hint ? `${err.message} (${err.hint})` : err.message}
  }
  return {code: 'FAILED', status: null, message: err instanceof Error ? err.message : String(err)}
}
