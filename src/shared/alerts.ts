/**
 * Alerts (issue 8): the rules HQ evaluates over the fleet, the states an alert goes through, and
 * what the API and the CLI exchange. Apart from api.ts, so a command's flag options load no TypeBox.
 */

/**
 * The rules, each firing per subject (a node, or a rollout for rollout-failed). An alert's
 * fingerprint is `rule:subject`: one open alert per fingerprint.
 */
export const ALERT_RULES = [
  'heartbeat-stale',
  'cert-expiring',
  'image-unsigned',
  'service-down',
  'disk-critical',
  'version-drift',
  'sync-lag',
  'rollout-failed',
  'security-critical',
] as const
export type AlertRule = (typeof ALERT_RULES)[number]

export const ALERT_SEVERITIES = ['warning', 'critical'] as const
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number]

/** open → acked (a user took it) → resolved (the condition cleared; only the evaluator resolves). */
export const ALERT_STATES = ['open', 'acked', 'resolved'] as const
export type AlertState = (typeof ALERT_STATES)[number]

export function isAlertRule(s: string): s is AlertRule {
  return (ALERT_RULES as readonly string[]).includes(s)
}

export const ALERT_ID_PATTERN = /^al_[0-9a-z]{20}$/
export const SILENCE_ID_PATTERN = /^si_[0-9a-z]{20}$/

export function fingerprintOf(rule: AlertRule, subject: string): string {
  return `${rule}:${subject}`
}

/** An alert as HQ stores and serves it. */
export type AlertView = {
  id: string
  fingerprint: string
  rule: AlertRule
  /** What it is about: a node id, or a rollout id (rollout-failed). */
  subject: string
  /** The node it is about, when it is about one (what a silence with --node matches). */
  node_id: string | null
  severity: AlertSeverity
  state: AlertState
  summary: string
  details: Record<string, unknown>
  /** A matching silence held back its notification (it notifies if the silence ends first). */
  silenced: boolean
  first_seen: string
  last_seen: string
  resolved_at: string | null
  acked_by: string | null
  acked_at: string | null
}

/** A silence: alerts of a rule (on one node, or fleet-wide) are not notified until it expires. */
export type SilenceView = {
  id: string
  rule: AlertRule
  node_id: string | null
  reason: string
  created_by: string
  created_at: string
  expires_at: string
  active: boolean
}

/** POST /v1/alerts/silences. */
export type SilenceRequest = {rule: string; node_id?: string; for_s: number; reason: string}

/** GET /v1/alerts: without `state`, the alerts not resolved (open and acked). */
export type AlertQuery = {state?: AlertState; severity?: AlertSeverity; rule?: AlertRule; node?: string; limit?: number}

/** The shortest and longest silence HQ accepts. */
export const SILENCE_MIN_S = 60
export const SILENCE_MAX_S = 90 * 86_400
