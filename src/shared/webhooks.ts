/**
 * Alert webhooks (issue 8, item 3): what the API and the CLI exchange about webhooks and their
 * deliveries. Apart from api.ts, so a command's flag options load no TypeBox.
 */

export const WEBHOOK_FORMATS = ['generic', 'slack', 'pagerduty'] as const
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number]

/** pending → delivered, or → failed (a dead letter: 4 attempts spent, or a 4xx other than 429). */
export const DELIVERY_STATES = ['pending', 'delivered', 'failed'] as const
export type DeliveryState = (typeof DELIVERY_STATES)[number]

/** What a delivery carries: an alert that opened, one that resolved, or `jil alerts webhook test`. */
export const DELIVERY_EVENTS = ['opened', 'resolved', 'test'] as const
export type DeliveryEvent = (typeof DELIVERY_EVENTS)[number]

export const WEBHOOK_ID_PATTERN = /^wh_[0-9a-z]{20}$/
export const DELIVERY_ID_PATTERN = /^wd_[0-9a-z]{20}$/

/** The shortest shared secret HQ accepts (HMAC-SHA256 keys shorter than this are guessable). */
export const WEBHOOK_SECRET_MIN = 16
export const WEBHOOK_SECRET_MAX = 512

/** A webhook as HQ lists it: never its secret nor its routing key, only their fingerprints. */
export type WebhookView = {
  id: string
  /** The URL with anything token-like in its path masked (a Slack webhook URL is itself a credential). */
  url: string
  format: WebhookFormat
  /** `sha256:` + the first 16 hex of SHA-256 of the secret: tells two secrets apart, reveals neither. */
  secret_fingerprint: string
  routing_key_fingerprint: string | null
  created_by: string
  created_at: string
}

/** POST /v1/alerts/webhooks. `routing_key`: PagerDuty's integration key (pagerduty only, required there). */
export type WebhookAddRequest = {url: string; secret: string; format?: WebhookFormat; routing_key?: string}

/** One POST of a delivery. `status`: the HTTP status, null when none came back (network error, timeout). */
export type DeliveryAttempt = {at: string; status: number | null; error: string | null}

export type DeliveryView = {
  id: string
  webhook_id: string
  event: DeliveryEvent
  alert_id: string | null
  fingerprint: string | null
  state: DeliveryState
  attempts: number
  /** When the next attempt is due (pending only). */
  next_attempt_at: string | null
  last_status: number | null
  last_error: string | null
  created_at: string
  finished_at: string | null
  attempt_log: DeliveryAttempt[]
}

export type DeliveryQuery = {webhook?: string; state?: DeliveryState; limit?: number}
