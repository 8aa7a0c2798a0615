import {createHash, createHmac} from 'node:crypto'

import type {AlertView} from '../../shared/alerts.js'
import type {DeliveryEvent, WebhookFormat} from '../../shared/webhooks.js'

// What a webhook delivery sends: pure functions of the delivery, so every attempt sends the same
// body and the unit tests check the shapes without a server.

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`: the X-JIL-Signature header. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}

/** The headers of one attempt; the timestamp is the attempt's (unix seconds), so a receiver can refuse replays. */
export function signedHeaders(secret: string, body: string, at: Date, deliveryId: string): Record<string, string> {
  const timestamp = String(Math.floor(at.getTime() / 1000))
  return {
    'content-type': 'application/json',
    'user-agent': 'jil-hq',
    'x-jil-delivery': deliveryId,
    'x-jil-timestamp': timestamp,
    'x-jil-signature': webhookSignature(secret, timestamp, body),
  }
}

/** `sha256:` + 16 hex: shows which secret a webhook holds without revealing it. */
export function secretFingerprint(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex').slice(0, 16)}`
}

/** The URL without credentials, query or fragment, token-like path segments masked (Slack's URL is a credential). */
export function displayUrl(url: string): string {
  const u = new URL(url)
  const path = u.pathname
    .split('/')
    .map((seg) => (seg.length >= 16 ? `${seg.slice(0, 4)}…` : seg))
    .join('/')
  return `${u.protocol}//${u.host}${path}${u.search ? '?…' : ''}`
}

export type Backoff = {
  /** Delay after the first failed attempt (default 10 s). */
  baseMs: number
  /** Each further delay is this many times the previous (default 4). */
  factor: number
  /** ± this fraction of the delay, at random (default 0.2), so many webhooks failing together spread out. */
  jitter: number
}

export const DEFAULT_BACKOFF: Backoff = {baseMs: 10_000, factor: 4, jitter: 0.2}

/** Attempts in all: the first and 3 retries. */
export const MAX_ATTEMPTS = 4

/** The wait after failed attempt number `attempt` (1-based); `random` in [0, 1). */
export function backoffMs(attempt: number, b: Backoff, random: () => number): number {
  const nominal = b.baseMs * b.factor ** (attempt - 1)
  return Math.round(nominal * (1 + b.jitter * (2 * random() - 1)))
}

/** Network errors (status null), 429 and 5xx are worth retrying; any other answer will not change. */
export function retryable(status: number | null): boolean {
  return status === null || status === 429 || status >= 500
}

/** A delivery as rendered: what happened to which alert. `webhookId` names the webhook a test came from. */
export type RenderInput = {deliveryId: string; event: DeliveryEvent; alert: AlertView; createdAt: string; webhookId: string}

/** The generic format: jil's own JSON, the alert as the API serves it. */
export type GenericPayload = {type: `alert.${DeliveryEvent}`; delivery_id: string; created_at: string; alert: AlertView}

/** Slack incoming webhooks: `text` (the notification's fallback) and Block Kit `blocks`. */
export type SlackPayload = {text: string; blocks: Record<string, unknown>[]}

/** PagerDuty Events API v2 (https://events.pagerduty.com/v2/enqueue). */
export type PagerDutyPayload = {
  routing_key: string
  event_action: 'trigger' | 'resolve'
  dedup_key: string
  client: string
  payload?: {summary: string; source: string; severity: 'critical' | 'warning' | 'error' | 'info'; timestamp: string; component: string; class: string; custom_details: Record<string, unknown>}
}

export function renderGeneric(d: RenderInput): GenericPayload {
  return {type: `alert.${d.event}`, delivery_id: d.deliveryId, created_at: d.createdAt, alert: d.alert}
}

function headline(d: RenderInput): string {
  const a = d.alert
  const on = a.node_id ?? a.subject
  if (d.event === 'test') return `jil webhook test: ${a.summary}`
  if (d.event === 'resolved') return `Resolved: ${a.rule} on ${on}: ${a.summary}`
  return `[${a.severity.toUpperCase()}] ${a.rule} on ${on}: ${a.summary}`
}

export function renderSlack(d: RenderInput): SlackPayload {
  const a = d.alert
  const icon = d.event === 'resolved' ? ':white_check_mark:' : d.event === 'test' ? ':wave:' : a.severity === 'critical' ? ':red_circle:' : ':warning:'
  const text = headline(d)
  // Slack's mrkdwn treats &, < and > as markup.
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  return {
    text,
    blocks: [
      {type: 'section', text: {type: 'mrkdwn', text: `${icon} *${esc(text)}*`.slice(0, 3000)}},
      {
        type: 'context',
        elements: [{type: 'mrkdwn', text: esc(`${a.fingerprint} · since ${a.first_seen}${a.resolved_at ? ` · resolved ${a.resolved_at}` : ''} · alert ${a.id}`)}],
      },
    ],
  }
}

/**
 * Triggers on opening and resolves on resolution, both with dedup_key = the alert's fingerprint,
 * so the resolve closes the incident the trigger opened (and a re-opened fingerprint re-triggers it).
 */
export function renderPagerDuty(d: RenderInput, routingKey: string): PagerDutyPayload {
  const a = d.alert
  const dedupKey = d.event === 'test' ? `jil-webhook-test:${d.webhookId}` : a.fingerprint
  if (d.event === 'resolved') return {routing_key: routingKey, event_action: 'resolve', dedup_key: dedupKey, client: 'jil'}
  return {
    routing_key: routingKey,
    event_action: 'trigger',
    dedup_key: dedupKey,
    client: 'jil',
    payload: {
      summary: headline(d).slice(0, 1024),
      source: a.node_id ?? a.subject,
      severity: d.event === 'test' ? 'info' : a.severity,
      timestamp: a.first_seen,
      component: a.node_id ?? a.subject,
      class: a.rule,
      custom_details: {alert_id: a.id, fingerprint: a.fingerprint, rule: a.rule, subject: a.subject, state: a.state, ...a.details},
    },
  }
}

/** The body of a delivery in the webhook's format (the same bytes on every attempt). */
export function renderBody(format: WebhookFormat, d: RenderInput, routingKey: string | null): string {
  switch (format) {
    case 'slack':
      return JSON.stringify(renderSlack(d))
    case 'pagerduty':
      return JSON.stringify(renderPagerDuty(d, routingKey ?? ''))
    default:
      return JSON.stringify(renderGeneric(d))
  }
}
