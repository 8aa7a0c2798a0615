import type {Logger} from 'pino'

import type {AgentName, AgentReport} from '../../shared/api.js'
import type {Clock} from '../../shared/clock.js'
import {JilError, messageOf} from '../../shared/errors.js'
import {HqClient} from '../../shared/hq-client.js'
import {loadNodeIdentity, type NodeIdentity} from '../identity.js'
import {DockerRuntime, type Runtime} from '../runtime.js'
import type {NodeSettings} from '../settings.js'
import {writeLastReport} from '../state.js'
import type {Agent, AgentContext} from './types.js'

/** The four agents, each imported only when it runs (a cron run of one agent loads only that one). */
const AGENTS: Record<AgentName, () => Promise<Agent>> = {
  health: async () => (await import('./health.js')).healthAgent,
  maintenance: async () => (await import('./maintenance.js')).maintenanceAgent,
  security: async () => (await import('./security.js')).securityAgent,
  update: async () => (await import('./update.js')).updateAgent,
}

export type ContextOptions = {
  stateDir: string
  settings: NodeSettings
  clock: Clock
  log: Logger
  version: string
  signal?: AbortSignal
  /** Tests and the daemon may pass a runtime of their own. */
  runtime?: Runtime
}

/**
 * An agent context over the node's state dir. `close()` releases the HQ connection; the runtime has
 * no connection to release (dockerode opens one per request).
 */
export async function createAgentContext(o: ContextOptions): Promise<AgentContext & {close(): Promise<void>}> {
  const first = await loadNodeIdentity(o.stateDir)
  let client: {hq: HqClient; certPem: string} | undefined
  let runtime: Promise<Runtime> | undefined = o.runtime ? Promise.resolve(o.runtime) : undefined
  const identity = (): Promise<NodeIdentity> => loadNodeIdentity(o.stateDir)
  return {
    stateDir: o.stateDir,
    nodeId: first.identity.node_id,
    settings: o.settings,
    clock: o.clock,
    log: o.log,
    version: o.version,
    signal: o.signal ?? new AbortController().signal,
    identity,
    async hq() {
      const id = await identity()
      // A renewal replaced the certificate: connect with the new one.
      if (client && client.certPem !== id.certPem) {
        await client.hq.close().catch(() => {})
        client = undefined
      }
      client ??= {hq: await HqClient.connect(id.identity.hq_url, {cert: id.certPem, key: id.keyPem, ca: id.caPem}), certPem: id.certPem}
      return client.hq
    },
    runtime() {
      runtime ??= DockerRuntime.connect(o.settings.dockerHost)
      return runtime
    },
    async close() {
      await client?.hq.close().catch(() => {})
      client = undefined
    },
  }
}

/**
 * One run of an agent: times it, turns a failure into a report with ok: false, keeps the report in
 * the state dir and sends it to HQ (a report HQ cannot take is logged, never fatal: the run's own
 * result stands). Never throws for the agent's failures; the caller decides the exit code from `ok`.
 */
export async function runAgent(name: AgentName, ctx: AgentContext): Promise<AgentReport> {
  const startedAt = ctx.clock.now()
  let report: AgentReport
  try {
    const agent = await AGENTS[name]()
    const out = await agent(ctx)
    report = {agent: name, node_id: ctx.nodeId, started_at: startedAt.toISOString(), finished_at: ctx.clock.now().toISOString(), ok: true, summary: clip(out.summary), findings: out.findings, details: out.details}
  } catch (err) {
    const e = err instanceof JilError ? err : new JilError('INTERNAL', messageOf(err))
    if (!(err instanceof JilError)) ctx.log.error({err, agent: name}, 'agent failed unexpectedly')
    report = {
      agent: name,
      node_id: ctx.nodeId,
      started_at: startedAt.toISOString(),
      finished_at: ctx.clock.now().toISOString(),
      ok: false,
      summary: clip(`${name} could not run: ${e.message}`),
      findings: [],
      error: {code: e.code.slice(0, 100), message: clip(e.message)},
      details: e.hint ? {hint: e.hint} : {},
    }
  }
  await writeLastReport(ctx.stateDir, report)
  try {
    await (await ctx.hq()).report(report)
  } catch (err) {
    ctx.log.warn({agent: name, err: messageOf(err)}, 'could not send the agent report to HQ; kept locally')
  }
  return report
}

/** The wire schema bounds these (HQ refuses a longer one with 400). */
function clip(s: string, max = 1000): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`
}
