import {Counter, Gauge, Histogram, type Registry} from 'prom-client'

import {ALERT_RULES, ALERT_STATES} from '../../shared/alerts.js'
import type {Queryable} from '../../shared/db/types.js'
import {DELIVERY_STATES} from '../../shared/webhooks.js'

/**
 * The alert engine's figures on HQ's /metrics: alerts by rule and state (read from the database
 * at scrape time, so every replica reports the same numbers, not only the one evaluating), how long
 * an evaluation takes, evaluations by outcome, and webhook deliveries: attempts by outcome (this
 * replica's) and deliveries by state (the database's).
 */
export class AlertMetrics {
  readonly evaluationSeconds = new Histogram({
    name: 'jil_hq_alert_evaluation_duration_seconds',
    help: 'One alert evaluation: loading the fleet snapshot, the rules, storing the alerts',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [],
  })
  readonly evaluations = new Counter({
    name: 'jil_hq_alert_evaluations_total',
    help: 'Alert evaluations by outcome: ok, failed, or standby (another replica holds the lock)',
    labelNames: ['outcome'] as const,
    registers: [],
  })
  /** Webhook delivery attempts by outcome, as this replica made them. */
  readonly deliveries = new Counter({
    name: 'jil_hq_webhook_deliveries_total',
    help: 'Webhook delivery attempts by outcome: delivered, retried (failed, another attempt due), failed (dead letter)',
    labelNames: ['outcome'] as const,
    registers: [],
  })
  /** Walks of HQ's registry for the image-unsigned rule (registry-scan.ts), by outcome. */
  readonly registryScans = new Counter({
    name: 'jil_hq_alert_registry_scans_total',
    help: 'Walks of the registry for unsigned digests by outcome: ok, failed (the previous walk stays in use)',
    labelNames: ['outcome'] as const,
    registers: [],
  })
  readonly alerts: Gauge<'rule' | 'state'>
  readonly deliveryStates: Gauge<'state'>

  constructor(db: Queryable) {
    this.alerts = new Gauge({
      name: 'jil_hq_alerts',
      help: 'Alerts by rule and state (resolved: all resolved alerts kept)',
      labelNames: ['rule', 'state'] as const,
      registers: [],
      async collect() {
        const {rows} = await db.query<{rule: string; state: string; n: number}>('SELECT rule, state, count(*)::int AS n FROM alerts GROUP BY rule, state')
        // Every rule and state, zeros included, so a series never vanishes when its alerts clear.
        for (const rule of ALERT_RULES) for (const state of ALERT_STATES) this.set({rule, state}, 0)
        for (const r of rows) this.set({rule: r.rule, state: r.state}, r.n)
      },
    })
    this.deliveryStates = new Gauge({
      name: 'jil_hq_webhook_deliveries_stored',
      help: 'Webhook deliveries kept, by state (pending: waiting for an attempt; failed: dead letters)',
      labelNames: ['state'] as const,
      registers: [],
      async collect() {
        const {rows} = await db.query<{state: string; n: number}>('SELECT state, count(*)::int AS n FROM webhook_deliveries GROUP BY state')
        for (const state of DELIVERY_STATES) this.set({state}, 0)
        for (const r of rows) this.set({state: r.state}, r.n)
      },
    })
    for (const outcome of ['delivered', 'retried', 'failed']) this.deliveries.inc({outcome}, 0)
    for (const outcome of ['ok', 'failed']) this.registryScans.inc({outcome}, 0)
  }

  /** Adds these metrics to HQ's registry (app.ts owns it). */
  registerOn(registry: Registry): void {
    registry.registerMetric(this.evaluationSeconds)
    registry.registerMetric(this.evaluations)
    registry.registerMetric(this.registryScans)
    registry.registerMetric(this.alerts)
    registry.registerMetric(this.deliveries)
    registry.registerMetric(this.deliveryStates)
  }
}
