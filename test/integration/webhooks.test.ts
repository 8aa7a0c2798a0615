import {createHmac, timingSafeEqual} from 'node:crypto'
import {existsSync} from 'node:fs'
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {WebhookDispatcher, WebhookOutbox} from '../../src/hq/alerts/webhooks.js'
import type {HqInitResult} from '../../src/hq/init.js'
import type {RunningHq} from '../../src/hq/server.js'
import type {AlertView} from '../../src/shared/alerts.js'
import type {AuditEntry} from '../../src/shared/audit.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {ManualClock} from '../../src/shared/clock.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {HqClient} from '../../src/shared/hq-client.js'
import type {DeliveryView, WebhookView} from '../../src/shared/webhooks.js'
import {dbAdapters} from '../helpers/adapters.js'
import {BIN, jil} from '../helpers/cli.js'
import {auditOnce, startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

const MIN = 60_000
const DAY = 86_400_000
const SECRET = 'receiver-shares-this-secret-0123456789'

type Received = {path: string; headers: Record<string, string>; body: string; json: any; verified: boolean}

/**
 * A real HTTP receiver on 127.0.0.1: answers each path from its script (the last status repeats),
 * verifies X-JIL-Signature with the shared secret as a receiver would, and keeps what came.
 */
async function receiver(secret = SECRET): Promise<{url: (path: string) => string; script: (path: string, statuses: number[]) => void; got: (path: string) => Received[]; all: Received[]; close: () => Promise<void>; delayMs: number}> {
  const scripts = new Map<string, number[]>()
  const all: Received[] = []
  const r = {
    delayMs: 0,
    all,
    url: (path: string) => `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    script: (path: string, statuses: number[]) => void scripts.set(path, [...statuses]),
    got: (path: string) => all.filter((x) => x.path === path),
    close: () => new Promise<void>((res) => server.close(() => res())),
  }
  const server: Server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      const headers = req.headers as Record<string, string>
      const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(`${headers['x-jil-timestamp']}.${body}`).digest('hex')}`)
      const given = Buffer.from(headers['x-jil-signature'] ?? '')
      const verified = given.length === expected.length && timingSafeEqual(given, expected)
      all.push({path: req.url!, headers, body, json: JSON.parse(body), verified})
      const s = scripts.get(req.url!) ?? [200]
      const status = s.length > 1 ? s.shift()! : s[0]!
      setTimeout(() => res.writeHead(status, {'content-type': 'application/json'}).end('{}'), r.delayMs)
    })
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()))
  return r
}

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

/**
 * Webhooks in an in-process HQ with an injected clock: the alert evaluator and the delivery loop
 * are ticked by hand (their timers never fire, wakes are off), the clock is moved, never slept.
 * Backoff: 1 s, ×4, jitter pinned by random = 0.5 (so exactly 1 s, 4 s, 16 s).
 */
describe.each(storages)('alert webhooks on $name', (storage) => {
  const clock = new ManualClock(new Date())
  let t: Awaited<ReturnType<typeof startTestHq>>
  let hq: RunningHq
  let init: HqInitResult
  let admin: HqClient
  let vera: HqClient
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  let rx: Awaited<ReturnType<typeof receiver>>
  const clients: HqClient[] = []
  let nodeN = 0

  /** A node that joined a day ago and never sent a heartbeat: heartbeat-stale fires on it at the next evaluation. */
  async function silentNode(): Promise<string> {
    const id = `CH-WH${storage.name === 'pg' ? 'P' : 'L'}-${String(++nodeN).padStart(2, '0')}`
    const day = new Date(clock.now().getTime() - DAY)
    await hq.db.query("INSERT INTO nodes (id, zone, operator, track, status, created_at, joined_at) VALUES ($1, 'CH/FINMA', 'Webhooks AG', 'devnet', 'active', $2, $2)", [id, day])
    return id
  }
  /** The node is heard from now: its stale alert resolves at the next evaluation. */
  async function heardFrom(id: string): Promise<void> {
    const body = {node_id: id, services: [], system: {disk_percent: 10}, sync: {lag_s: 0}}
    await hq.db.query('INSERT INTO node_heartbeats (node_id, received_at, body) VALUES ($1, $2, $3) ON CONFLICT (node_id) DO UPDATE SET received_at = $2, body = $3', [id, clock.now(), JSON.stringify(body)])
  }
  const evaluate = () => hq.alerts.tick()
  const deliver = () => hq.webhooks.tick()
  const deliveriesOf = async (webhook: string) => (await admin.webhookDeliveries({webhook})).deliveries
  async function withWebhook<T>(path: string, statuses: number[], fn: (w: WebhookView) => Promise<T>, format: 'generic' | 'pagerduty' = 'generic'): Promise<T> {
    rx.script(path, statuses)
    const w = await admin.addWebhook({url: rx.url(path), secret: SECRET, format, ...(format === 'pagerduty' ? {routing_key: 'R0UT1NGKEY0123456789'} : {})})
    try {
      return await fn(w)
    } finally {
      await admin.removeWebhook(w.id)
    }
  }
  const audit = (subject: string, action: string): Promise<AuditEntry[]> => auditOnce(admin, subject, action)

  beforeAll(async () => {
    rx = await receiver()
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    tmp = await tempDir()
    t = await startTestHq({
      clock,
      rolloutTickMs: 2_000_000_000,
      alertEveryMs: 2_000_000_000,
      webhooks: {pollMs: 2_000_000_000, wake: false, backoff: {baseMs: 1000}, random: () => 0.5, timeoutMs: 5000},
      ...(pg ? {databaseUrl: pg.url} : {}),
    })
    ;({hq, init} = t)
    const adminBundle: UserBundle = t.admin
    admin = await HqClient.connect(hq.url, adminBundle)
    const users = await testUsers({hq, admin: adminBundle}, tmp.dir, [['vera', 'viewer']] as const)
    vera = users.vera!.client
    clients.push(admin, vera)
    await hq.db.query("INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ('Webhooks AG', 'approved', now(), now())")
  })
  afterAll(async () => {
    for (const c of clients) await c.close()
    await t?.stop()
    await pg?.drop()
    await tmp?.cleanup()
    await rx?.close()
  })

  it('bad input is refused with a clear error and nothing is stored; secrets never come back', async () => {
    const before = (await hq.db.query('SELECT count(*)::int AS n FROM webhooks')).rows[0]
    await expect(admin.addWebhook({url: 'ftp://files.example.com/hook', secret: SECRET})).rejects.toMatchObject({status: 400, code: 'WEBHOOK_URL_INVALID', message: 'webhooks are sent over HTTP(S), not ftp://'})
    await expect(admin.addWebhook({url: rx.url('/x'), secret: ''})).rejects.toMatchObject({status: 400, code: 'WEBHOOK_SECRET_REQUIRED'})
    await expect(admin.request('POST', '/v1/alerts/webhooks', {url: rx.url('/x')})).rejects.toMatchObject({status: 400, details: {field: 'secret'}})
    await expect(admin.addWebhook({url: rx.url('/x'), secret: SECRET, format: 'pagerduty'})).rejects.toMatchObject({status: 400, code: 'WEBHOOK_ROUTING_KEY_REQUIRED'})
    await expect(admin.removeWebhook(`wh_${'0'.repeat(20)}`)).rejects.toMatchObject({status: 404, code: 'WEBHOOK_UNKNOWN'})
    await expect(admin.testWebhook(`wh_${'0'.repeat(20)}`)).rejects.toMatchObject({status: 404, code: 'WEBHOOK_UNKNOWN'})
    await expect(admin.removeWebhook('wh_nope')).rejects.toMatchObject({status: 400})
    await expect(vera.addWebhook({url: rx.url('/x'), secret: SECRET})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    expect((await hq.db.query('SELECT count(*)::int AS n FROM webhooks')).rows[0]).toEqual(before)
    expect(await admin.webhooks()).toEqual({webhooks: []})

    const w = await admin.addWebhook({url: rx.url('/listed'), secret: SECRET})
    const listed = await vera.webhooks()
    expect(listed.webhooks).toEqual([w])
    expect(JSON.stringify(listed)).not.toContain(SECRET)
    expect(w).toMatchObject({url: rx.url('/listed'), format: 'generic', secret_fingerprint: expect.stringMatching(/^sha256:[0-9a-f]{16}$/), routing_key_fingerprint: null, created_by: 'admin'})
    const added = await audit(w.id, 'webhook.add')
    expect(added[0]).toMatchObject({action: 'webhook.add', actor: {type: 'user', id: 'admin'}, details: {format: 'generic', secret_fingerprint: w.secret_fingerprint}})
    expect(JSON.stringify(added)).not.toContain(SECRET)
    await admin.removeWebhook(w.id)
    expect((await audit(w.id, 'webhook.remove')).map((e) => e.action)).toEqual(['webhook.add', 'webhook.remove'])
    expect(await admin.webhooks()).toEqual({webhooks: []})
    // The removed webhook's secret is gone from the database too.
    expect((await hq.db.query('SELECT secret FROM webhooks WHERE id = $1', [w.id])).rows[0]).toEqual({secret: ''})
    await expect(admin.removeWebhook(w.id)).rejects.toMatchObject({status: 404, code: 'WEBHOOK_UNKNOWN'})
  })

  it('the receiver verifies the signature; failing twice (500) then 200 gets the alert exactly once more: 3 attempts', async () => {
    await withWebhook('/flaky', [500, 500, 200], async (w) => {
      const node = await silentNode()
      expect(await evaluate()).toMatchObject({opened: 1, notified: 1})
      expect(await deliver()).toMatchObject({claimed: 1, retried: 1})
      expect(await deliver()).toMatchObject({claimed: 0}) // not due before the backoff
      clock.advance(999)
      expect(await deliver()).toMatchObject({claimed: 0})
      clock.advance(1)
      expect(await deliver()).toMatchObject({claimed: 1, retried: 1})
      clock.advance(3_999)
      expect(await deliver()).toMatchObject({claimed: 0})
      clock.advance(1)
      expect(await deliver()).toMatchObject({claimed: 1, delivered: 1})
      clock.advance(DAY)
      expect(await deliver()).toMatchObject({claimed: 0})

      const got = rx.got('/flaky')
      expect(got).toHaveLength(3)
      expect(got.every((g) => g.verified)).toBe(true)
      expect(new Set(got.map((g) => g.body)).size).toBe(1) // the same body each time
      expect(new Set(got.map((g) => g.headers['x-jil-delivery'])).size).toBe(1)
      expect(got[0]!.json).toMatchObject({type: 'alert.opened', alert: {fingerprint: `heartbeat-stale:${node}`, state: 'open', rule: 'heartbeat-stale'}})
      const [d] = await deliveriesOf(w.id)
      expect(d).toMatchObject({state: 'delivered', attempts: 3, event: 'opened', fingerprint: `heartbeat-stale:${node}`, last_status: 200, next_attempt_at: null, last_error: null})
      expect(d!.attempt_log.map((a) => a.status)).toEqual([500, 500, 200])
      // A wrong secret would not verify: the receiver really checks.
      expect(createHmac('sha256', 'another-secret').update(`${got[0]!.headers['x-jil-timestamp']}.${got[0]!.body}`).digest('hex')).not.toBe(got[0]!.headers['x-jil-signature']!.slice(7))
      await heardFrom(node)
      await evaluate()
      await deliver()
    })
  })

  it('one that always fails gets 4 attempts, then a dead letter shown by deliveries; a 400 is not retried, a 429 is', async () => {
    await withWebhook('/down', [503], async (down) => {
      const node = await silentNode()
      await evaluate()
      for (const wait of [0, 1000, 4000, 16_000]) {
        clock.advance(wait)
        expect(await deliver()).toMatchObject({claimed: 1})
      }
      clock.advance(DAY)
      expect(await deliver()).toMatchObject({claimed: 0})
      expect(rx.got('/down')).toHaveLength(4)
      const failed = (await admin.webhookDeliveries({state: 'failed', webhook: down.id})).deliveries
      expect(failed).toEqual([expect.objectContaining({state: 'failed', attempts: 4, last_status: 503, last_error: 'HTTP 503', fingerprint: `heartbeat-stale:${node}`, next_attempt_at: null})])
      expect(failed[0]!.attempt_log.map((a) => a.status)).toEqual([503, 503, 503, 503])
      if (existsSync(join(BIN, '../../dist/commands/alerts/webhook/deliveries.js'))) {
        const cli = await jil(['alerts', 'webhook', 'deliveries', '--state', 'failed', '--webhook', down.id, '--json', '--hq', hq.url, '--user', init.admin_bundle])
        expect(cli.code).toBe(0)
        expect((cli.json() as {deliveries: DeliveryView[]}).deliveries.map((d) => d.id)).toEqual([failed[0]!.id])
        const table = await jil(['alerts', 'webhook', 'deliveries', '--state', 'failed', '--hq', hq.url, '--user', init.admin_bundle])
        expect(table.stdout).toContain(failed[0]!.id)
      }
      await heardFrom(node)
      await evaluate()
    })
    await withWebhook('/bad', [400], async (bad) => {
      const w429 = await admin.addWebhook({url: rx.url('/busy'), secret: SECRET})
      rx.script('/busy', [429, 200])
      try {
        const node = await silentNode()
        await evaluate()
        expect(await deliver()).toMatchObject({claimed: 2, failed: 1, retried: 1})
        clock.advance(1000)
        expect(await deliver()).toMatchObject({claimed: 1, delivered: 1})
        clock.advance(DAY)
        expect(await deliver()).toMatchObject({claimed: 0})
        expect(rx.got('/bad')).toHaveLength(1)
        expect(rx.got('/busy')).toHaveLength(2)
        expect(await deliveriesOf(bad.id)).toEqual([expect.objectContaining({state: 'failed', attempts: 1, last_status: 400})])
        expect(await deliveriesOf(w429.id)).toEqual([expect.objectContaining({state: 'delivered', attempts: 2})])
        await heardFrom(node)
        await evaluate()
      } finally {
        await admin.removeWebhook(w429.id)
      }
    })
  })

  it('a silenced alert sends nothing; a resolve sends PagerDuty a resolve with the same dedup_key', async () => {
    await withWebhook(
      '/pd',
      [202],
      async (pd) => {
        expect(pd.routing_key_fingerprint).toMatch(/^sha256:/)
        const quiet = await silentNode()
        await admin.silenceAlerts({rule: 'heartbeat-stale', node_id: quiet, for_s: 3600, reason: 'decommissioning'})
        const loud = await silentNode()
        await evaluate()
        await deliver()
        const got = rx.got('/pd')
        expect(got).toHaveLength(1)
        expect(got[0]!.json).toMatchObject({routing_key: 'R0UT1NGKEY0123456789', event_action: 'trigger', dedup_key: `heartbeat-stale:${loud}`, payload: {source: loud, severity: 'critical'}})
        expect((await deliveriesOf(pd.id)).map((d) => d.fingerprint)).toEqual([`heartbeat-stale:${loud}`])

        clock.advance(MIN)
        await heardFrom(loud)
        await heardFrom(quiet)
        expect(await evaluate()).toMatchObject({resolved: 2, notified: 1})
        await deliver()
        expect(rx.got('/pd')).toHaveLength(2)
        expect(rx.got('/pd')[1]!.json).toEqual({routing_key: 'R0UT1NGKEY0123456789', event_action: 'resolve', dedup_key: `heartbeat-stale:${loud}`, client: 'jil'})
        expect(rx.got('/pd').every((g) => g.verified)).toBe(true)
        expect(rx.all.filter((g) => JSON.stringify(g.json).includes(quiet))).toEqual([])
      },
      'pagerduty',
    )
  })

  it('webhook test enqueues a test event to that webhook alone; removing a webhook drops its pending deliveries', async () => {
    await withWebhook('/test', [204], async (w) => {
      const other = await admin.addWebhook({url: rx.url('/other'), secret: SECRET, format: 'slack'})
      const d = await admin.testWebhook(w.id)
      expect(d).toMatchObject({webhook_id: w.id, event: 'test', state: 'pending', attempts: 0})
      await deliver()
      expect(await admin.webhookDelivery(d.id)).toMatchObject({state: 'delivered', attempts: 1, last_status: 204})
      expect(rx.got('/test').map((g) => g.json.type)).toEqual(['alert.test'])
      expect(rx.got('/other')).toEqual([])
      // Pending when removed: failed, never sent.
      const node = await silentNode()
      await evaluate()
      await admin.removeWebhook(other.id)
      await deliver()
      expect(rx.got('/other')).toEqual([])
      expect(await deliveriesOf(other.id)).toEqual([expect.objectContaining({state: 'failed', attempts: 0, last_error: 'webhook removed'})])
      await heardFrom(node)
      await evaluate()
      await deliver()
    })
  })

  it('/metrics counts delivery attempts by outcome', async () => {
    const text = await vera.request<string>('GET', '/metrics')
    expect(text).toMatch(/jil_hq_webhook_deliveries_total\{outcome="delivered"\} [1-9]/)
    expect(text).toMatch(/jil_hq_webhook_deliveries_total\{outcome="retried"\} [1-9]/)
    expect(text).toMatch(/jil_hq_webhook_deliveries_total\{outcome="failed"\} [1-9]/)
    expect(text).toMatch(/jil_hq_webhook_deliveries_stored\{state="failed"\} [1-9]/)
    expect(text).toContain('jil_hq_webhook_deliveries_stored{state="pending"} 0')
  })
})

/** Two delivery loops on one database (two HQ replicas): every delivery is sent exactly once. */
describe.each(dbAdapters())('two delivery loops on one $name database', (adapter) => {
  let opened: Awaited<ReturnType<(typeof adapter)['open']>>
  let second: Db
  let rx: Awaited<ReturnType<typeof receiver>>
  beforeAll(async () => {
    rx = await receiver()
    opened = await adapter.open()
    second = adapter.name === 'pg' ? await openPg(opened.url!) : opened.db
  })
  afterAll(async () => {
    if (second !== opened?.db) await second?.close()
    await opened?.cleanup()
    await rx?.close()
  })

  it('claims with SKIP LOCKED: 40 deliveries, two loops ticking at once, each delivery POSTed once', async () => {
    const clock = new ManualClock(new Date())
    rx.delayMs = 20
    await opened.db.query(
      "INSERT INTO webhooks (id, url, format, secret, secret_fingerprint, created_by, created_at) VALUES ($1, $2, 'generic', $3, 'sha256:x', 'test', now())",
      [`wh_${'a'.repeat(20)}`, rx.url('/both'), SECRET],
    )
    const outbox = new WebhookOutbox(clock)
    const alert = (i: number): AlertView => ({
      id: `al_${String(i).padStart(20, '0')}`,
      fingerprint: `heartbeat-stale:CH-TWO-${i}`,
      rule: 'heartbeat-stale',
      subject: `CH-TWO-${i}`,
      node_id: `CH-TWO-${i}`,
      severity: 'critical',
      state: 'open',
      summary: 'silent',
      details: {},
      silenced: false,
      first_seen: clock.now().toISOString(),
      last_seen: clock.now().toISOString(),
      resolved_at: null,
      acked_by: null,
      acked_at: null,
    })
    await opened.db.transaction(async (tx) => {
      for (let i = 0; i < 40; i++) await outbox.opened(tx, alert(i))
    })
    const one = new WebhookDispatcher(opened.db, clock, {batch: 5, wake: false})
    const two = new WebhookDispatcher(second, clock, {batch: 5, wake: false})
    try {
      let claimed = 0
      for (let round = 0; round < 20 && claimed < 40; round++) {
        const [a, b] = await Promise.all([one.tick(), two.tick()])
        claimed += a.claimed + b.claimed
      }
      expect(claimed).toBe(40)
      const ids = rx.got('/both').map((g) => g.headers['x-jil-delivery'])
      expect(ids).toHaveLength(40)
      expect(new Set(ids).size).toBe(40)
      expect(rx.got('/both').every((g) => g.verified)).toBe(true)
      const {rows} = await opened.db.query<{state: string; attempts: number; n: number}>('SELECT state, attempts, count(*)::int AS n FROM webhook_deliveries GROUP BY state, attempts')
      expect(rows).toEqual([{state: 'delivered', attempts: 1, n: 40}])
    } finally {
      await one.stop()
      await two.stop()
    }
  })
})
