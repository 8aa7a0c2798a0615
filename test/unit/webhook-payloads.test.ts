import {createHmac} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {
  backoffMs,
  DEFAULT_BACKOFF,
  displayUrl,
  MAX_ATTEMPTS,
  renderBody,
  renderGeneric,
  renderPagerDuty,
  renderSlack,
  retryable,
  secretFingerprint,
  signedHeaders,
  webhookSignature,
  type RenderInput,
} from '../../src/hq/alerts/webhook-payloads.js'
import {checkWebhook} from '../../src/hq/alerts/webhooks.js'
import type {AlertView} from '../../src/shared/alerts.js'

const SECRET = 'a-shared-secret-of-some-length'
const alert: AlertView = {
  id: `al_${'a'.repeat(20)}`,
  fingerprint: 'disk-critical:CH-ZUG-01',
  rule: 'disk-critical',
  subject: 'CH-ZUG-01',
  node_id: 'CH-ZUG-01',
  severity: 'critical',
  state: 'open',
  summary: 'disk 96% full',
  details: {disk_percent: 96},
  silenced: false,
  first_seen: '2026-11-28T10:00:00.000Z',
  last_seen: '2026-11-28T10:01:00.000Z',
  resolved_at: null,
  acked_by: null,
  acked_at: null,
}
const input = (event: RenderInput['event'], a: AlertView = alert): RenderInput => ({deliveryId: `wd_${'b'.repeat(20)}`, event, alert: a, createdAt: '2026-11-28T10:01:00.000Z', webhookId: `wh_${'c'.repeat(20)}`})

describe('webhook signatures', () => {
  it('X-JIL-Signature is sha256=<hex HMAC-SHA256 of timestamp "." body> under the secret, with the attempt time in seconds', () => {
    const body = JSON.stringify({hello: 'world'})
    const at = new Date('2026-11-28T10:00:05.789Z')
    const h = signedHeaders(SECRET, body, at, 'wd_x')
    expect(h['x-jil-timestamp']).toBe(String(Math.floor(at.getTime() / 1000)))
    const expected = createHmac('sha256', SECRET).update(`${h['x-jil-timestamp']}.${body}`).digest('hex')
    expect(h['x-jil-signature']).toBe(`sha256=${expected}`)
    expect(h['x-jil-signature']).toMatch(/^sha256=[0-9a-f]{64}$/)
    expect(h['content-type']).toBe('application/json')
    expect(h['x-jil-delivery']).toBe('wd_x')
    // Another secret, timestamp or body: another signature.
    expect(webhookSignature('another-secret-entirely', h['x-jil-timestamp']!, body)).not.toBe(h['x-jil-signature'])
    expect(webhookSignature(SECRET, String(Number(h['x-jil-timestamp']) + 1), body)).not.toBe(h['x-jil-signature'])
    expect(webhookSignature(SECRET, h['x-jil-timestamp']!, body + ' ')).not.toBe(h['x-jil-signature'])
  })

  it('a secret is shown as a fingerprint that does not contain it; token-like URL segments are masked', () => {
    expect(secretFingerprint(SECRET)).toMatch(/^sha256:[0-9a-f]{16}$/)
    expect(secretFingerprint(SECRET)).not.toContain(SECRET)
    expect(displayUrl('https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX')).toBe('https://hooks.slack.com/services/T0001/B0002/XXXX…')
    expect(displayUrl('http://127.0.0.1:9000/hook?token=abc')).toBe('http://127.0.0.1:9000/hook?…')
  })
})

describe('webhook payloads', () => {
  it('generic: jil JSON with the event type and the alert as the API serves it', () => {
    expect(renderGeneric(input('opened'))).toEqual({type: 'alert.opened', delivery_id: `wd_${'b'.repeat(20)}`, created_at: '2026-11-28T10:01:00.000Z', alert})
    expect(renderGeneric(input('resolved')).type).toBe('alert.resolved')
    expect(renderGeneric(input('test')).type).toBe('alert.test')
  })

  it('slack: an incoming-webhook body, text plus mrkdwn blocks, escaped', () => {
    const s = renderSlack(input('opened', {...alert, summary: 'disk <96%> & rising'}))
    expect(s.text).toBe('[CRITICAL] disk-critical on CH-ZUG-01: disk <96%> & rising')
    expect(s.blocks[0]).toEqual({type: 'section', text: {type: 'mrkdwn', text: ':red_circle: *[CRITICAL] disk-critical on CH-ZUG-01: disk &lt;96%&gt; &amp; rising*'}})
    expect(s.blocks[1]).toMatchObject({type: 'context', elements: [{type: 'mrkdwn', text: expect.stringContaining('disk-critical:CH-ZUG-01')}]})
    const r = renderSlack(input('resolved', {...alert, state: 'resolved', resolved_at: '2026-11-28T11:00:00.000Z'}))
    expect(r.text).toBe('Resolved: disk-critical on CH-ZUG-01: disk 96% full')
    expect(JSON.stringify(r.blocks)).toContain(':white_check_mark:')
  })

  it('pagerduty: Events API v2 trigger with dedup_key = fingerprint; the resolve carries the same dedup_key', () => {
    const t = renderPagerDuty(input('opened'), 'R0UT1NGKEY')
    expect(t).toEqual({
      routing_key: 'R0UT1NGKEY',
      event_action: 'trigger',
      dedup_key: 'disk-critical:CH-ZUG-01',
      client: 'jil',
      payload: {
        summary: '[CRITICAL] disk-critical on CH-ZUG-01: disk 96% full',
        source: 'CH-ZUG-01',
        severity: 'critical',
        timestamp: '2026-11-28T10:00:00.000Z',
        component: 'CH-ZUG-01',
        class: 'disk-critical',
        custom_details: {alert_id: alert.id, fingerprint: alert.fingerprint, rule: 'disk-critical', subject: 'CH-ZUG-01', state: 'open', disk_percent: 96},
      },
    })
    expect(renderPagerDuty(input('resolved'), 'R0UT1NGKEY')).toEqual({routing_key: 'R0UT1NGKEY', event_action: 'resolve', dedup_key: 'disk-critical:CH-ZUG-01', client: 'jil'})
    // PagerDuty's limits: summary ≤ 1024 characters, severity one of four.
    const long = renderPagerDuty(input('opened', {...alert, severity: 'warning', summary: 'x'.repeat(5000)}), 'K')
    expect(long.payload!.summary).toHaveLength(1024)
    expect(long.payload!.severity).toBe('warning')
    expect(renderPagerDuty(input('test'), 'K')).toMatchObject({event_action: 'trigger', dedup_key: `jil-webhook-test:wh_${'c'.repeat(20)}`, payload: {severity: 'info'}})
  })

  it('the body is the same bytes on every render (each attempt signs the same body)', () => {
    for (const f of ['generic', 'slack', 'pagerduty'] as const) expect(renderBody(f, input('opened'), 'K')).toBe(renderBody(f, input('opened'), 'K'))
  })
})

describe('webhook retries', () => {
  it('backoff: base ×4 each attempt, ±20 % jitter from the injected random', () => {
    const b = {...DEFAULT_BACKOFF, baseMs: 10_000}
    expect([1, 2, 3].map((n) => backoffMs(n, b, () => 0.5))).toEqual([10_000, 40_000, 160_000])
    expect([1, 2, 3].map((n) => backoffMs(n, b, () => 0))).toEqual([8_000, 32_000, 128_000])
    expect([1, 2, 3].map((n) => backoffMs(n, b, () => 0.999999))).toEqual([12_000, 48_000, 192_000])
    expect(backoffMs(2, {baseMs: 5, factor: 4, jitter: 0.2}, () => 0.75)).toBe(22)
    expect(MAX_ATTEMPTS).toBe(4)
  })

  it('retried: network errors, 429, 5xx; not: other 4xx', () => {
    expect([null, 429, 500, 502, 503].map(retryable)).toEqual([true, true, true, true, true])
    expect([400, 401, 403, 404, 410, 422, 301].map(retryable)).toEqual([false, false, false, false, false, false, false])
  })
})

describe('webhook input', () => {
  it('refuses non-http(s) URLs, a missing or short secret, and routing keys where they do not belong', () => {
    const ok = {url: 'https://ops.example.com/jil', secret: SECRET}
    expect(checkWebhook(ok)).toEqual({url: 'https://ops.example.com/jil', secret: SECRET, format: 'generic', routingKey: null})
    expect(() => checkWebhook({...ok, url: 'ftp://ops.example.com/jil'})).toThrow(expect.objectContaining({code: 'WEBHOOK_URL_INVALID', message: 'webhooks are sent over HTTP(S), not ftp://'}))
    expect(() => checkWebhook({...ok, url: 'not a url'})).toThrow(expect.objectContaining({code: 'WEBHOOK_URL_INVALID'}))
    expect(() => checkWebhook({...ok, url: 'https://u:p@ops.example.com/'})).toThrow(expect.objectContaining({code: 'WEBHOOK_URL_INVALID'}))
    expect(() => checkWebhook({...ok, secret: ''})).toThrow(expect.objectContaining({code: 'WEBHOOK_SECRET_REQUIRED', message: 'a webhook needs a shared secret'}))
    expect(() => checkWebhook({...ok, secret: 'short'})).toThrow(expect.objectContaining({code: 'WEBHOOK_SECRET_REQUIRED'}))
    expect(() => checkWebhook({...ok, format: 'pagerduty'})).toThrow(expect.objectContaining({code: 'WEBHOOK_ROUTING_KEY_REQUIRED'}))
    expect(() => checkWebhook({...ok, routing_key: 'K'})).toThrow(expect.objectContaining({code: 'WEBHOOK_ROUTING_KEY_UNEXPECTED'}))
  })
})
