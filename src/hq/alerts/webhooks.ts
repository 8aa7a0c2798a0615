
import {request} from 'undici'

import type {AlertRule, AlertView} from '../../shared/alerts.js'
import type {Clock} from '../../shared/clock.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError, messageOf, systemCode} from '../../shared/errors.js'
import {newId} from '../../shared/ids.js'
import {PassLoop} from '../../shared/loop.js'
import {
  WEBHOOK_FORMATS,
  WEBHOOK_SECRET_MIN,
  type DeliveryAttempt,
  type DeliveryEvent,
  type DeliveryQuery,
  type DeliveryState,
  type DeliveryView,
  type WebhookAddRequest,
  type WebhookFormat,
  type WebhookView,
} from '../../shared/webhooks.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {actorOf} from '../identity/service.js'
import type {AlertSink} from './evaluator.js'
import type {AlertMetrics} from './metrics.js'
import {backoffMs, DEFAULT_BACKOFF, displayUrl, MAX_ATTEMPTS, renderBody, retryable, secretFingerprint, signedHeaders, type Backoff} from './webhook-payloads.js'

export const newWebhookId = () => newId('wh')
export const newDeliveryId = () => newId('wd')

type WebhookRow = {id: string; url: string; format: WebhookFormat; secret_fingerprint: string; routing_key_fingerprint: string | null; created_by: string; created_at: Date}
const WEBHOOK_COLUMNS = 'id, url, format, secret_fingerprint, routing_key_fingerprint, created_by, created_at'

type DeliveryRow = Omit<DeliveryView, 'next_attempt_at' | 'created_at' | 'finished_at'> & {next_attempt_at: Date | null; created_at: Date; finished_at: Date | null}
const DELIVERY_COLUMNS = 'id, webhook_id, event, alert_id, fingerprint, state, attempts, next_attempt_at, last_status, last_error, attempt_log, created_at, finished_at'

function toWebhook(r: WebhookRow): WebhookView {
  return {...r, url: displayUrl(r.url), created_at: r.created_at.toISOString()}
}

function toDelivery(r: DeliveryRow): DeliveryView {
  return {...r, next_attempt_at: r.next_attempt_at?.toISOString() ?? null, created_at: r.created_at.toISOString(), finished_at: r.finished_at?.toISOString() ?? null}
}

/** Checks a webhook before anything is stored; each refusal names the field and says what to do. */
export function checkWebhook(req: WebhookAddRequest): {url: string; secret: string; format: WebhookFormat; routingKey: string | null} {
  const format = req.format ?? 'generic'
  if (!(WEBHOOK_FORMATS as readonly string[]).includes(format)) {
    throw new JilError('WEBHOOK_FORMAT_INVALID', `no webhook format ${JSON.stringify(format)}`, {hint: `formats: ${WEBHOOK_FORMATS.join(', ')}`, details: {field: 'format'}})
  }
  let url: URL
  try {
    url = new URL(req.url)
  } catch {
    throw new JilError('WEBHOOK_URL_INVALID', `${JSON.stringify(req.url)} is not a URL`, {hint: 'give an http:// or https:// URL, e.g. https://hooks.example.com/jil', details: {field: 'url'}})
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new JilError('WEBHOOK_URL_INVALID', `webhooks are sent over HTTP(S), not ${url.protocol.replace(/:$/, '')}://`, {hint: 'give an http:// or https:// URL', details: {field: 'url'}})
  }
  if (url.username || url.password) {
    throw new JilError('WEBHOOK_URL_INVALID', 'the URL carries credentials (user:password@)', {hint: 'HQ signs each POST with the shared secret instead; drop them from the URL', details: {field: 'url'}})
  }
  if (typeof req.secret !== 'string' || req.secret.length < WEBHOOK_SECRET_MIN) {
    throw new JilError('WEBHOOK_SECRET_REQUIRED', req.secret ? `the secret is shorter than ${WEBHOOK_SECRET_MIN} characters` : 'a webhook needs a shared secret', {
      hint: `give --secret with at least ${WEBHOOK_SECRET_MIN} characters (e.g. openssl rand -hex 32); the receiver checks X-JIL-Signature with it`,
      details: {field: 'secret'},
    })
  }
  const routingKey = req.routing_key ?? null
  if (format === 'pagerduty' && !routingKey) {
    throw new JilError('WEBHOOK_ROUTING_KEY_REQUIRED', 'a pagerduty webhook needs its routing key', {hint: "give --routing-key: the Events API v2 integration key of the PagerDuty service", details: {field: 'routing_key'}})
  }
  if (format !== 'pagerduty' && routingKey) {
    throw new JilError('WEBHOOK_ROUTING_KEY_UNEXPECTED', `a ${format} webhook takes no routing key`, {hint: 'only --format pagerduty uses --routing-key', details: {field: 'routing_key'}})
  }
  return {url: url.toString(), secret: req.secret, format, routingKey}
}

/**
 * What users do with webhooks: add, list, remove, send a test, read the deliveries. Add and
 * remove share their transaction with the audit entry; secrets go in, never out.
 */
export class WebhookService {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    /** Wakes the delivery loop of this process once a test delivery is stored. */
    private readonly wake: () => void = () => {},
  ) {}

  async add(p: Principal, req: WebhookAddRequest): Promise<WebhookView> {
    const w = checkWebhook(req)
    const now = this.clock.now()
    const by = p.kind === 'user' ? p.name : p.id
    return this.db.transaction(async (tx) => {
      const id = newWebhookId()
      const {rows} = await tx.query<WebhookRow>(
        `INSERT INTO webhooks (id, url, format, secret, secret_fingerprint, routing_key, routing_key_fingerprint, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${WEBHOOK_COLUMNS}`,
        [id, w.url, w.format, w.secret, secretFingerprint(w.secret), w.routingKey, w.routingKey ? secretFingerprint(w.routingKey) : null, by, now],
      )
      const view = toWebhook(rows[0]!)
      await this.ledger.append(tx, {actor: actorOf(p), action: 'webhook.add', subject: id, details: {url: view.url, format: w.format, secret_fingerprint: view.secret_fingerprint}})
      return view
    })
  }

  async list(): Promise<WebhookView[]> {
    const {rows} = await this.db.query<WebhookRow>(`SELECT ${WEBHOOK_COLUMNS} FROM webhooks WHERE removed_at IS NULL ORDER BY created_at, id`)
    return rows.map(toWebhook)
  }

  /** Removes a webhook: its secret is wiped, its pending deliveries fail (their history stays). */
  async remove(p: Principal, id: string): Promise<WebhookView> {
    const now = this.clock.now()
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<WebhookRow>(
        `UPDATE webhooks SET removed_at = $2, secret = '', routing_key = NULL WHERE id = $1 AND removed_at IS NULL RETURNING ${WEBHOOK_COLUMNS}`,
        [id, now],
      )
      if (!rows[0]) throw unknownWebhook(id)
      const {rowCount} = await tx.query(
        `UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL, finished_at = $2, last_error = 'webhook removed' WHERE webhook_id = $1 AND state = 'pending'`,
        [id, now],
      )
      const view = toWebhook(rows[0])
      await this.ledger.append(tx, {actor: actorOf(p), action: 'webhook.remove', subject: id, details: {url: view.url, format: view.format, pending_dropped: rowCount}})
      return view
    })
  }

  /** Enqueues a test event to one webhook; the delivery loop sends it like any other. */
  async test(p: Principal, id: string): Promise<DeliveryView> {
    const now = this.clock.now()
    const by = p.kind === 'user' ? p.name : p.id
    const delivery = await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{id: string}>('SELECT id FROM webhooks WHERE id = $1 AND removed_at IS NULL', [id])
      if (!rows[0]) throw unknownWebhook(id)
      const alert: AlertView = {
        id: 'test',
        fingerprint: `webhook-test:${id}`,
        // Not a rule: a receiver tells a test from an alert by the event type (alert.test).
        rule: 'webhook-test' as AlertRule,
        subject: id,
        node_id: null,
        severity: 'warning',
        state: 'open',
        summary: `test from ${by}`,
        details: {},
        silenced: false,
        first_seen: now.toISOString(),
        last_seen: now.toISOString(),
        resolved_at: null,
        acked_by: null,
        acked_at: null,
      }
      const [d] = await enqueue(tx, 'test', alert, now, id)
      return d!
    })
    this.wake()
    return delivery
  }

  async deliveries(q: DeliveryQuery): Promise<DeliveryView[]> {
    const {rows} = await this.db.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE ($1::text IS NULL OR webhook_id = $1) AND ($2::text IS NULL OR state = $2)
        ORDER BY created_at DESC, id LIMIT $3`,
      [q.webhook ?? null, q.state ?? null, q.limit ?? 100],
    )
    return rows.map(toDelivery)
  }

  async delivery(id: string): Promise<DeliveryView> {
    const {rows} = await this.db.query<DeliveryRow>(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1`, [id])
    if (!rows[0]) throw new JilError('DELIVERY_UNKNOWN', `no delivery ${id}`, {status: 404, hint: 'see jil alerts webhook deliveries'})
    return toDelivery(rows[0])
  }
}

function unknownWebhook(id: string): JilError {
  return new JilError('WEBHOOK_UNKNOWN', `no webhook ${id}`, {status: 404, hint: 'see jil alerts webhook list'})
}

/** Writes one pending delivery per webhook (or to the one webhook given), due now, in the caller's transaction. */
async function enqueue(tx: Queryable, event: DeliveryEvent, alert: AlertView, now: Date, webhookId?: string): Promise<DeliveryView[]> {
  const {rows: hooks} = await tx.query<{id: string}>('SELECT id FROM webhooks WHERE removed_at IS NULL AND ($1::text IS NULL OR id = $1) ORDER BY id', [webhookId ?? null])
  if (hooks.length === 0) return []
  const {rows} = await tx.query<DeliveryRow>(
    `INSERT INTO webhook_deliveries (id, webhook_id, event, alert_id, fingerprint, alert, state, next_attempt_at, created_at)
     SELECT d.id, d.webhook_id, $1, $2, $3, $4::jsonb, 'pending', $5, $5 FROM unnest($6::text[], $7::text[]) AS d(id, webhook_id)
     RETURNING ${DELIVERY_COLUMNS}`,
    [event, event === 'test' ? null : alert.id, event === 'test' ? null : alert.fingerprint, JSON.stringify(alert), now, hooks.map(() => newDeliveryId()), hooks.map((h) => h.id)],
  )
  return rows.map(toDelivery)
}

/**
 * The evaluator's sink for webhooks: each notification becomes one pending delivery per webhook,
 * written with the evaluator's transaction (so it exists exactly when the alert's change does).
 */
export class WebhookOutbox implements AlertSink {
  constructor(
    private readonly clock: Clock,
    /** Called once per notification; the loop should run once the evaluator's transaction commits. */
    private readonly wake: () => void = () => {},
  ) {}

  async opened(tx: Queryable, alert: AlertView): Promise<void> {
    if ((await enqueue(tx, 'opened', alert, this.clock.now())).length > 0) this.wake()
  }

  async resolved(tx: Queryable, alert: AlertView): Promise<void> {
    if ((await enqueue(tx, 'resolved', alert, this.clock.now())).length > 0) this.wake()
  }
}

/** Posts one body; resolves with the HTTP status, or null and the error when none came back. A Poster is undici in HQ. */
export type Poster = (url: string, headers: Record<string, string>, body: string, timeoutMs: number) => Promise<{status: number | null; error: string | null}>

export const undiciPoster: Poster = async (url, headers, body, timeoutMs) => {
  try {
    const res = await request(url, {method: 'POST', headers, body, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs)})
    // What the receiver says is not kept (it could echo anything); only its status is.
    await res.body.dump()
    return {status: res.statusCode, error: res.statusCode >= 200 && res.statusCode < 300 ? null : `HTTP ${res.statusCode}`}
  } catch (err) {
    const name = (err as {name?: string}).name
    return {status: null, error: name === 'TimeoutError' || name === 'AbortError' ? `no answer within ${timeoutMs} ms` : (systemCode(err) ?? messageOf(err)).slice(0, 200)}
  }
}

export type WebhookDispatcherOptions = {
  /** How often due deliveries are looked for (default 5 s); a wake runs the loop at once. */
  pollMs?: number
  /** Whether a wake (an enqueue in this process) runs the loop; off in tests that tick by hand. */
  wake?: boolean
  backoff?: Partial<Backoff>
  /** One attempt's time limit (default 10 s). */
  timeoutMs?: number
  /** Deliveries claimed per pass (sent concurrently). */
  batch?: number
  random?: () => number
  post?: Poster
  metrics?: AlertMetrics
  onError?: (err: unknown) => void
}

type ClaimRow = {id: string; webhook_id: string; event: DeliveryEvent; alert: AlertView; attempts: number; created_at: Date; url: string; format: WebhookFormat; secret: string; routing_key: string | null}

/** What one pass did. */
export type DeliveryPass = {claimed: number; delivered: number; retried: number; failed: number}

/**
 * The delivery loop: claims due deliveries (FOR UPDATE SKIP LOCKED, then a claim time in the row,
 * so replicas never send one twice), POSTs them signed, and records each attempt: delivered on 2xx,
 * due again after a backoff on a network error, 5xx or 429 until 4 attempts are spent, failed (a
 * dead letter) after that or on any other answer. One owned timer, single-flight (a wake during a
 * pass runs one more pass after it), stop() waits for the pass in flight.
 */
export class WebhookDispatcher {
  private readonly loop: PassLoop<DeliveryPass>
  private wakeTimer: NodeJS.Timeout | undefined
  private readonly backoff: Backoff
  private readonly timeoutMs: number
  private readonly post: Poster
  private readonly random: () => number

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly o: WebhookDispatcherOptions = {},
  ) {
    this.backoff = {...DEFAULT_BACKOFF, ...o.backoff}
    this.timeoutMs = o.timeoutMs ?? 10_000
    this.post = o.post ?? undiciPoster
    this.random = o.random ?? Math.random
    this.loop = new PassLoop(() => this.pass(), {
      everyMs: o.pollMs ?? 5_000,
      overlap: 'again',
      combine: (a, b) => ({claimed: a.claimed + b.claimed, delivered: a.delivered + b.delivered, retried: a.retried + b.retried, failed: a.failed + b.failed}),
      ...(o.onError ? {onError: o.onError} : {}),
    })
  }

  start(): void {
    this.loop.start()
    // What a previous run left due goes out now.
    this.wake()
  }

  /**
   * Runs a pass soon: the enqueuing transaction has not committed when the sink wakes the loop, so
   * the pass starts a moment later (and the poll catches anything a pass still missed).
   */
  wake(): void {
    if (this.o.wake === false || this.loop.stopped || this.wakeTimer) return
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined
      this.loop.kick()
    }, 50)
  }

  /** One pass now (tests move the clock, then tick); a tick during a pass runs one more pass after it. */
  tick(): Promise<DeliveryPass> {
    return this.loop.tick()
  }

  async stop(): Promise<void> {
    // The loop counts as stopped at once, so no wake() arms its timer again after this clear.
    const stopping = this.loop.stop()
    clearTimeout(this.wakeTimer)
    this.wakeTimer = undefined
    await stopping
  }

  private async pass(): Promise<DeliveryPass> {
    const r: DeliveryPass = {claimed: 0, delivered: 0, retried: 0, failed: 0}
    if (this.loop.stopped) return r
    const now = this.clock.now()
    // The claim lasts past the attempt's time limit: a replica that dies mid-attempt leaves the row due again then.
    const claimUntil = new Date(now.getTime() + this.timeoutMs * 3 + 5_000)
    const claimed = await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<ClaimRow>(
        `WITH due AS (
           SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1
            ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE webhook_deliveries d SET next_attempt_at = $3 FROM due, webhooks w
          WHERE d.id = due.id AND w.id = d.webhook_id
         RETURNING d.id, d.webhook_id, d.event, d.alert, d.attempts, d.created_at, w.url, w.format, w.secret, w.routing_key`,
        [now, this.o.batch ?? 20, claimUntil],
      )
      return rows
    })
    r.claimed = claimed.length
    await Promise.all(
      claimed.map(async (c) => {
        const outcome = await this.attempt(c)
        r[outcome]++
        this.o.metrics?.deliveries.inc({outcome})
      }),
    )
    return r
  }

  private async attempt(c: ClaimRow): Promise<'delivered' | 'retried' | 'failed'> {
    const body = renderBody(c.format, {deliveryId: c.id, event: c.event, alert: c.alert, createdAt: c.created_at.toISOString(), webhookId: c.webhook_id}, c.routing_key)
    const at = this.clock.now()
    const {status, error} = await this.post(c.url, signedHeaders(c.secret, body, at, c.id), body, this.timeoutMs)
    const attempts = c.attempts + 1
    const ok = status !== null && status >= 200 && status < 300
    const outcome = ok ? 'delivered' : retryable(status) && attempts < MAX_ATTEMPTS ? 'retried' : 'failed'
    const state: DeliveryState = outcome === 'retried' ? 'pending' : outcome
    const done = this.clock.now()
    const next = outcome === 'retried' ? new Date(done.getTime() + backoffMs(attempts, this.backoff, this.random)) : null
    const entry: DeliveryAttempt = {at: at.toISOString(), status, error}
    await this.db.query(
      `UPDATE webhook_deliveries SET state = $2, attempts = $3, next_attempt_at = $4, last_status = $5, last_error = $6,
              attempt_log = attempt_log || $7::jsonb, finished_at = $8
        WHERE id = $1 AND state = 'pending'`,
      [c.id, state, attempts, next, status, error, JSON.stringify([entry]), state === 'pending' ? null : done],
    )
    return outcome
  }
}
