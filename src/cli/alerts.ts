import {ALERT_ID_PATTERN, SILENCE_ID_PATTERN, SILENCE_MAX_S, SILENCE_MIN_S, type AlertView, type SilenceView} from '../shared/alerts.js'
import {usageError} from '../shared/errors.js'
import {WEBHOOK_ID_PATTERN, type DeliveryView, type WebhookView} from '../shared/webhooks.js'
import {parseDuration} from '../node/settings.js'
import {table} from './table.js'

// What `jil alerts …` share: argument checks before anything is sent, and the tables.

export function parseAlertId(value: string): string {
  const id = value.toLowerCase()
  if (!ALERT_ID_PATTERN.test(id)) throw usageError('ALERT_ID_INVALID', `${JSON.stringify(value)} is not an alert id`, 'alert ids look like al_… (see jil alerts list)')
  return id
}

export function parseSilenceId(value: string): string {
  const id = value.toLowerCase()
  if (!SILENCE_ID_PATTERN.test(id)) throw usageError('SILENCE_ID_INVALID', `${JSON.stringify(value)} is not a silence id`, 'silence ids look like si_… (see jil alerts silences)')
  return id
}

/** `--for 2h` → seconds, within what HQ accepts (1 minute to 90 days). */
export function parseSilenceFor(value: string): number {
  const s = Math.round(parseDuration(value, '--for') / 1000)
  if (s < SILENCE_MIN_S || s > SILENCE_MAX_S) {
    throw usageError('DURATION_INVALID', `--for ${JSON.stringify(value)} is outside 1m to ${SILENCE_MAX_S / 86_400}d`, 'silence for a while, e.g. --for 2h; end it early with jil alerts unsilence ID')
  }
  return s
}

export function alertsTable(alerts: readonly AlertView[]): string {
  return table(
    alerts.map((a) => ({...a, state: a.silenced && a.state !== 'resolved' ? `${a.state} (silenced)` : a.state})),
    [
      {key: 'id', header: 'id'},
      {key: 'severity', header: 'severity'},
      {key: 'state', header: 'state'},
      {key: 'rule', header: 'rule'},
      {key: 'summary', header: 'summary'},
      {key: 'first_seen', header: 'since'},
    ],
  )
}

export function silencesTable(silences: readonly SilenceView[]): string {
  return table(
    silences.map((s) => ({...s, node_id: s.node_id ?? 'all nodes', state: s.active ? 'active' : 'expired'})),
    [
      {key: 'id', header: 'id'},
      {key: 'rule', header: 'rule'},
      {key: 'node_id', header: 'node'},
      {key: 'state', header: 'state'},
      {key: 'expires_at', header: 'until'},
      {key: 'created_by', header: 'by'},
      {key: 'reason', header: 'reason'},
    ],
  )
}

// ---- webhooks

export function parseWebhookId(value: string): string {
  const id = value.toLowerCase()
  if (!WEBHOOK_ID_PATTERN.test(id)) throw usageError('WEBHOOK_ID_INVALID', `${JSON.stringify(value)} is not a webhook id`, 'webhook ids look like wh_… (see jil alerts webhook list)')
  return id
}

/** Refuses what HQ would refuse, before anything is sent: only http(s) URLs. */
export function parseWebhookUrl(value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw usageError('WEBHOOK_URL_INVALID', `${JSON.stringify(value)} is not a URL`, 'give an http:// or https:// URL, e.g. https://hooks.example.com/jil')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw usageError('WEBHOOK_URL_INVALID', `webhooks are sent over HTTP(S), not ${url.protocol.replace(/:$/, '')}://`, 'give an http:// or https:// URL')
  return value
}

/** After `webhook test`: waits (up to waitMs) for the first attempt's outcome, polling HQ. */
export async function awaitFirstAttempt(get: (id: string) => Promise<DeliveryView>, d: DeliveryView, waitMs: number): Promise<DeliveryView> {
  const until = Date.now() + waitMs
  let cur = d
  while (cur.state === 'pending' && cur.attempts === 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250))
    cur = await get(d.id)
  }
  return cur
}

export function webhooksTable(webhooks: readonly WebhookView[]): string {
  return table(
    webhooks.map((w) => ({...w, secret: w.secret_fingerprint})),
    [
      {key: 'id', header: 'id'},
      {key: 'format', header: 'format'},
      {key: 'url', header: 'url'},
      {key: 'secret', header: 'secret'},
      {key: 'created_by', header: 'by'},
    ],
  )
}

export function deliveriesTable(deliveries: readonly DeliveryView[]): string {
  return table(
    deliveries.map((d) => ({...d, what: d.fingerprint ? `${d.event} ${d.fingerprint}` : d.event, last: d.last_error ?? (d.last_status === null ? '' : String(d.last_status)), attempts: String(d.attempts), next: d.next_attempt_at ?? ''})),
    [
      {key: 'id', header: 'id'},
      {key: 'webhook_id', header: 'webhook'},
      {key: 'state', header: 'state'},
      {key: 'attempts', header: 'attempts'},
      {key: 'what', header: 'event'},
      {key: 'last', header: 'last'},
      {key: 'next', header: 'next attempt'},
    ],
  )
}
