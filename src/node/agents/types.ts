import type {Logger} from 'pino'

import type {AgentName, AgentReport, Finding} from '../../shared/api.js'
import type {Clock} from '../../shared/clock.js'
import type {HqClient} from '../../shared/hq-client.js'
import type {NodeIdentity} from '../identity.js'
import type {Runtime} from '../runtime.js'
import type {NodeSettings} from '../settings.js'

export type {AgentName, AgentReport, Finding}

/**
 * What an agent is given: the same whether the daemon schedules it or cron runs `jil agent run`.
 * Everything with I/O is injected; each getter is lazy so an agent pays only for what it uses.
 */
export type AgentContext = {
  stateDir: string
  nodeId: string
  settings: NodeSettings
  clock: Clock
  log: Logger
  /** The jil version (heartbeats carry it). */
  version: string
  /** The node's identity as on disk now (re-read after a renewal). */
  identity(): Promise<NodeIdentity>
  /** An HQ client with the node's current certificate; the run wrapper closes it after the run. */
  hq(): Promise<HqClient>
  /** The container engine (connected once per context). */
  runtime(): Promise<Runtime>
  /** Aborted when the daemon is stopping: long waits (an update's health wait) give up and restore. */
  signal: AbortSignal
  /**
   * The daemon with event sync: offers the heartbeat to the bus (jil.fleet.status), best effort,
   * bounded in time. Absent under cron (no bus session in a one-shot run).
   */
  publishStatus?: (heartbeat: unknown) => Promise<{published: true} | {published: false; reason: string}>
}

/** What an agent's run returns; the wrapper adds agent, node, times and ok. */
export type AgentOutcome = {
  summary: string
  findings: Finding[]
  details: Record<string, unknown>
}

/**
 * An agent does one run. It throws a JilError when it could not do its job (Docker or HQ unreachable):
 * the run then reports ok: false and `jil agent run` exits 1. Findings are data, never a throw.
 */
export type Agent = (ctx: AgentContext) => Promise<AgentOutcome>
