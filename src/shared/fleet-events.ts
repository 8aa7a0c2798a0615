import type {AlertView} from './alerts.js'
import type {FleetCommand, FleetNode, RolloutView} from './api.js'

/**
 * The live fleet stream (`GET /v1/events`, text/event-stream) that `jil top` reads: one SSE message
 * per event, `event: <type>` and `data: <JSON of the event>`. Each carries the changed things whole
 * (as the list routes return them), so a client upserts them by id and never re-fetches per frame.
 *
 * A client subscribes, waits for `ready`, then loads its snapshot (the list routes): nothing that
 * changes after `ready` is missed. After a dropped stream it does the same again. HQ coalesces node
 * changes (heartbeats above all) to at most one event per node per second, across all replicas.
 */
export type FleetEvent =
  /** The stream is live; load the snapshot now. */
  | {type: 'ready'; at: string}
  /** Nodes whose row changed: a heartbeat, status, run mode, join, revoke. */
  | {type: 'nodes'; nodes: FleetNode[]}
  /** Alerts opened, changed, acked or resolved. */
  | {type: 'alerts'; alerts: AlertView[]}
  /** Rollouts created or moved on (state, per-node progress). */
  | {type: 'rollouts'; rollouts: RolloutView[]}
  /** Commands issued, delivered or finished (with their results). */
  | {type: 'commands'; commands: FleetCommand[]}

export type FleetEventType = FleetEvent['type']

export const FLEET_EVENT_TYPES = ['ready', 'nodes', 'alerts', 'rollouts', 'commands'] as const satisfies readonly FleetEventType[]

/** How often HQ writes an SSE comment on an idle stream, so proxies keep it and clients can tell it is alive. */
export const FLEET_EVENTS_KEEPALIVE_MS = 15_000
