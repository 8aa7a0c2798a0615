import type {AgentName} from '../shared/api.js'
import type {NodeHealth} from './healthz.js'

/**
 * The daemon's Prometheus metrics (`GET /metrics` on its local port): agent runs, their duration,
 * skipped ticks and last success per agent, plus what the health probe sees (containers by state,
 * certificate expiry, /healthz status) read at scrape time. One registry per daemon, so tests and
 * several daemons in one process never share counters.
 */
export type DaemonMetrics = {
  agentRun(agent: AgentName, ok: boolean, seconds: number, finishedAt: Date): void
  skippedTick(agent: AgentName): void
  render(): Promise<{contentType: string; body: string}>
}

/** What the metrics read of event sync at scrape time (the sync runner's snapshot). */
export type SyncMetricsSource = () => {caught_up: boolean; lag_s: number; outbox_backlog: number; gaps: number; counters: {applied: number; duplicates: number; own: number; published: number; restarts: number; pruned: number; status_published: number; status_dropped: number}} | undefined

export async function createDaemonMetrics(o: {probe: () => Promise<NodeHealth>; nodeId: string; agents: readonly AgentName[]; sync?: SyncMetricsSource}): Promise<DaemonMetrics> {
  // prom-client is loaded by the daemon only, never by `jil agent run` or `jil --version`.
  const {Counter, Gauge, Histogram, Registry, collectDefaultMetrics} = await import('prom-client')
  const registry = new Registry()
  registry.setDefaultLabels({node: o.nodeId})
  collectDefaultMetrics({register: registry, prefix: 'jil_daemon_'})
  const runs = new Counter({
    name: 'jil_agent_runs_total',
    help: 'Agent runs, by agent and outcome (ok: the agent did its job; failed: it could not)',
    labelNames: ['agent', 'outcome'] as const,
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'jil_agent_run_duration_seconds',
    help: 'Duration of agent runs, by agent',
    labelNames: ['agent'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [registry],
  })
  const skipped = new Counter({
    name: 'jil_agent_skipped_ticks_total',
    help: 'Scheduled ticks skipped because the previous run of the agent was still in flight',
    labelNames: ['agent'] as const,
    registers: [registry],
  })
  // Series exist from the start (at 0), so a rate() over them works before the first skip.
  for (const agent of o.agents) skipped.inc({agent}, 0)
  const lastSuccess = new Gauge({
    name: 'jil_agent_last_success_timestamp_seconds',
    help: 'When each agent last finished a run that did its job (Unix time)',
    labelNames: ['agent'] as const,
    registers: [registry],
  })
  const containers = new Gauge({name: 'jil_containers', help: "The node's containers, by state", labelNames: ['state'] as const, registers: [registry]})
  const certExpiry = new Gauge({name: 'jil_node_cert_expiry_timestamp_seconds', help: 'When the node certificate expires (Unix time)', registers: [registry]})
  const healthz = new Gauge({name: 'jil_healthz_status', help: '1 when /healthz answers 200 (the load balancer routes here), else 0', registers: [registry]})
  // Event sync, only on a node that runs it.
  const syncGauges = o.sync
    ? {
        backlog: new Gauge({name: 'jil_sync_outbox_backlog', help: 'Outbox rows not yet published to the bus', registers: [registry]}),
        lag: new Gauge({name: 'jil_sync_lag_seconds', help: 'How far the applier is behind (0 when caught up)', registers: [registry]}),
        caughtUp: new Gauge({name: 'jil_sync_caught_up', help: '1 when every synced partition is consumed to its end', registers: [registry]}),
        gaps: new Gauge({name: 'jil_sync_gap_events', help: "Events missing from sources' sequences (open gaps)", registers: [registry]}),
        events: new Gauge({name: 'jil_sync_events', help: 'Sync events since the daemon started, by outcome (applied, duplicate, own, published, dedupe_pruned, status_published, status_dropped) and session restarts', labelNames: ['outcome'] as const, registers: [registry]}),
      }
    : undefined

  return {
    agentRun(agent, ok, seconds, finishedAt) {
      runs.inc({agent, outcome: ok ? 'ok' : 'failed'})
      duration.observe({agent}, seconds)
      if (ok) lastSuccess.set({agent}, finishedAt.getTime() / 1000)
    },
    skippedTick(agent) {
      skipped.inc({agent})
    },
    async render() {
      const h = await o.probe()
      containers.reset()
      for (const [state, n] of Object.entries(h.containers ?? {})) containers.set({state}, n)
      if (h.cert_not_after) certExpiry.set(Date.parse(h.cert_not_after) / 1000)
      else certExpiry.reset()
      healthz.set(h.status === 'ok' ? 1 : 0)
      const sync = o.sync?.()
      if (syncGauges && sync) {
        syncGauges.backlog.set(sync.outbox_backlog)
        syncGauges.lag.set(sync.lag_s)
        syncGauges.caughtUp.set(sync.caught_up ? 1 : 0)
        syncGauges.gaps.set(sync.gaps)
        const c = sync.counters
        for (const [outcome, n] of [['applied', c.applied], ['duplicate', c.duplicates], ['own', c.own], ['published', c.published], ['restart', c.restarts], ['dedupe_pruned', c.pruned], ['status_published', c.status_published], ['status_dropped', c.status_dropped]] as const) syncGauges.events.set({outcome}, n)
      }
      return {contentType: registry.contentType, body: await registry.metrics()}
    },
  }
}
