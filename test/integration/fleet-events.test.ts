import {cp, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {pino} from 'pino'
import {Agent, request} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {startHq} from '../../src/hq/server.js'
import type {AlertView} from '../../src/shared/alerts.js'
import type {FleetCommand, FleetNode, RolloutView} from '../../src/shared/api.js'
import {ManualClock, systemClock} from '../../src/shared/clock.js'
import type {FleetEvent, FleetEventType} from '../../src/shared/fleet-events.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {certInfo} from '../../src/shared/pki.js'
import {approvalPayload, type ImageManifest} from '../../src/shared/manifest.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {closeSuite, connectTestNode, suiteState, testHeartbeat} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
if (!REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

const DAY = 86_400_000

/** One subscriber's live stream, read in the background the way jil top's data hook reads it. */
class Feed {
  readonly events: FleetEvent[] = []
  error: unknown
  done = false
  private readonly abort = new AbortController()
  readonly finished: Promise<void>

  constructor(client: HqClient, types?: readonly FleetEventType[]) {
    this.finished = (async () => {
      try {
        for await (const e of client.events({signal: this.abort.signal, ...(types ? {types} : {})})) this.events.push(e)
      } catch (err) {
        this.error = err
      } finally {
        this.done = true
      }
    })()
  }

  /** Subscribes and waits for `ready`. */
  static async open(client: HqClient, types?: readonly FleetEventType[]): Promise<Feed> {
    const f = new Feed(client, types)
    await until('the stream to be ready', async () => {
      if (f.error) throw f.error
      return f.events.length > 0 ? true : undefined
    }, 20_000)
    expect(f.events[0]).toMatchObject({type: 'ready', at: expect.any(String)})
    return f
  }

  /** The first thing `pick` finds in the events received so far, waiting for it to arrive. */
  async find<T>(what: string, pick: (e: FleetEvent) => T | undefined): Promise<T> {
    return until(what, async () => {
      for (const e of this.events) {
        const x = pick(e)
        if (x !== undefined) return x
      }
      if (this.done) throw new Error(`the stream ended (${String(this.error)})`)
      return undefined
    }, 20_000)
  }

  nodes(id: string): FleetNode[] {
    return this.events.flatMap((e) => (e.type === 'nodes' ? e.nodes.filter((n) => n.id === id) : []))
  }

  async close(): Promise<void> {
    this.abort.abort()
    await this.finished
  }
}

const nodeIn = (id: string, ok: (n: FleetNode) => boolean = () => true) => (e: FleetEvent) => (e.type === 'nodes' ? e.nodes.find((n) => n.id === id && ok(n)) : undefined)
const alertIn = (ok: (a: AlertView) => boolean) => (e: FleetEvent) => (e.type === 'alerts' ? e.alerts.find(ok) : undefined)
const commandIn = (id: string, status: FleetCommand['status']) => (e: FleetEvent) => (e.type === 'commands' ? e.commands.find((c) => c.id === id && c.status === status) : undefined)
const rolloutIn = (id: string, state: RolloutView['state']) => (e: FleetEvent) => (e.type === 'rollouts' ? e.rollouts.find((r) => r.id === id && r.state === state) : undefined)

/**
 * GET /v1/events over real mutual TLS, read through the HQ client: what `jil top` sees. Changes are
 * made through the API as users and nodes make them (the alert evaluator and rollout driver are
 * ticked by hand), and each must arrive on the stream whole.
 */
describe.runIf(REGISTRY).each(storages)('the live fleet stream on $name', (storage) => {
  const clock = new ManualClock(new Date())
  const suffix = storage.name === 'pg' ? 'PG' : 'LT'
  const [A, B, R] = [`CH-EV${suffix}-01`, `CH-EV${suffix}-02`, `JP-EV${suffix}-01`]
  const API = `jil/ev-api-${storage.name}`
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  const {users, nodes, digest, as} = suiteState()
  const feeds: Feed[] = []
  const open = async (who: string, types?: readonly FleetEventType[]) => {
    const f = await Feed.open(as(who), types)
    feeds.push(f)
    return f
  }

  function heartbeat(id: string, o: {disk?: number; digest?: string} = {}): Promise<{received_at: string}> {
    const services = o.digest ? [{name: 'api', critical: true, state: 'running', health: 'healthy' as const, digest: o.digest, version: null}] : []
    return nodes[id]!.client.heartbeat(testHeartbeat(id, clock.now(), {services, diskPercent: o.disk, certValidMs: 20 * DAY}))
  }

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    tmp = await tempDir()
    // Neither loop's timer fires: the evaluator and the rollout driver are ticked by hand.
    // A short keepalive, so the test sees one.
    t = await startTestHq({clock, registry: REGISTRY, rolloutTickMs: 2_000_000_000, alertEveryMs: 2_000_000_000, events: {keepaliveMs: 300}, ...(pg ? {databaseUrl: pg.url} : {})})
    Object.assign(users, await testUsers(t, tmp.dir, [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['otto', 'ops-lead'], ['vera', 'viewer']] as const))
    // A signed, approved image on testnet (v1.0 pinned, v1.1 to roll out), for the rollout.
    for (const v of ['v1.0', 'v1.1']) {
      digest[v] = await pushTinyImage(API, v)
      const m = await as('ci').request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/${API}:${v}`, version: v, commit: 'abcdef0'})
      await as('olga').request('POST', `/v1/images/${m.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(m, 'testnet'), users.olga!.bundle)})
      await as('otto').request('POST', `/v1/images/${m.digest}/promote`, {to: 'testnet'})
    }
    await as('olga').setStack('testnet', {services: [{name: 'api', image: API, critical: true, command: ['sleep', '3600']}]})
    await as('olga').pinStack('testnet', {service: 'api', version: 'v1.0'})
    for (const id of [A, B]) nodes[id] = await connectTestNode(t.hq, t.admin, {nodeId: id, zone: 'CH/FINMA', track: 'devnet', clock})
    nodes[R] = await connectTestNode(t.hq, t.admin, {nodeId: R, zone: 'JP/JFSA', track: 'testnet', clock})
    for (const id of [A, B]) await heartbeat(id)
    await heartbeat(R, {digest: digest['v1.0']!})
  })
  afterAll(async () => {
    for (const f of feeds) await f.close()
    await closeSuite({nodes, users, hq: t, pg, tmp})
  })

  it('speaks text/event-stream, ready first, then keepalives, to any user (a viewer too); a node identity and a bad filter are refused', async () => {
    // The wire itself, without the client's parser.
    const agent = new Agent({connect: {cert: t.admin.cert, key: t.admin.key, ca: t.admin.ca}})
    try {
      const res = await request(`${t.hq.url}/v1/events`, {dispatcher: agent, headers: {accept: 'text/event-stream'}})
      expect(res.statusCode).toBe(200)
      expect(String(res.headers['content-type'])).toMatch(/^text\/event-stream/)
      // Read by hand: breaking out of a for-await would close the stream.
      const chunks = res.body[Symbol.asyncIterator]()
      let text = ''
      while (!text.includes(': keepalive\n\n')) {
        const next = await chunks.next()
        if (next.done) break
        text += String(next.value)
      }
      expect(text).toMatch(/^event: ready\ndata: \{"type":"ready","at":"[^"]+"\}\n\n(: keepalive\n\n)+$/)
      // The subscriber is counted while connected.
      const metrics = await as('vera').request<string>('GET', '/metrics')
      expect(Number(/^jil_hq_event_streams (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1)
      res.body.destroy()
    } finally {
      await agent.destroy()
    }

    await open('vera')
    const refused = new Feed(nodes[A]!.client)
    await refused.finished
    expect(refused.events).toEqual([])
    expect(refused.error).toMatchObject({code: 'FORBIDDEN', status: 403})
    const bad = new Feed(as('vera'), ['nodes', 'fleets' as FleetEventType])
    await bad.finished
    expect(bad.error).toMatchObject({code: 'INVALID_QUERYSTRING', status: 400})
  })

  it("a node's heartbeats arrive as nodes events, coalesced: five at once, at most two events", async () => {
    const feed = await open('vera')
    const before = feed.nodes(A).length
    // What goes over the database: never one NOTIFY per heartbeat.
    const naming: string[] = []
    const stop = await t.hq.db.listen('jil_fleet_events', (p) => {
      if ((JSON.parse(p) as {ids: string[]}).ids.includes(A)) naming.push(p)
    })
    await Promise.all([11, 12, 13, 14, 15].map((disk) => heartbeat(A, {disk})))
    // What HQ kept (the five raced: any of them may be the latest).
    const stored = (await as('vera').fleetNode(A)).system!.disk_percent
    // Send what is still touched now rather than at the next flush, then mark the stream with an
    // unrelated change: once the marker arrives, every notification of A before it has been read.
    await t.hq.events.flush()
    await as('olga').runModeAction(B, 'pause')
    await feed.find('the marker', nodeIn(B, (n) => n.run_mode === 'paused'))
    const seen = feed.nodes(A).slice(before)
    expect(seen.length).toBeGreaterThanOrEqual(1)
    expect(seen.length).toBeLessThanOrEqual(2)
    expect(seen.at(-1)).toMatchObject({id: A, status: 'active', system: {disk_percent: stored}})
    await stop()
    expect(naming.length).toBeGreaterThanOrEqual(1)
    expect(naming.length).toBeLessThanOrEqual(2)
    await as('olga').runModeAction(B, 'resume')
  })

  it('an alert the evaluator opens, and its ack, arrive as alerts events', async () => {
    const feed = await open('vera')
    await heartbeat(A, {disk: 99})
    await t.hq.alerts.tick()
    const opened = await feed.find('the disk alert', alertIn((a) => a.rule === 'disk-critical' && a.node_id === A && a.state === 'open'))
    await as('olga').ackAlert(opened.id)
    const acked = await feed.find('the ack', alertIn((a) => a.id === opened.id && a.state === 'acked'))
    expect(acked).toMatchObject({acked_by: 'olga', severity: 'critical'})
    await heartbeat(A, {disk: 10})
    await t.hq.alerts.tick()
    await feed.find('the alert resolved', alertIn((a) => a.id === opened.id && a.state === 'resolved'))
  })

  it('a fleet command, its delivery and its result arrive as commands events', async () => {
    const feed = await open('vera')
    const sent = await as('olga').sendCommand('refresh', {node: A})
    const id = sent.commands[0]!.id
    await feed.find('the command issued', commandIn(id, 'pending'))
    const got = await nodes[A]!.client.nodeCommands(0)
    expect(got.commands.map((c) => c.id)).toContain(id)
    await feed.find('the command delivered', commandIn(id, 'delivered'))
    for (const c of got.commands) await nodes[A]!.client.commandResult(c.id, {ok: true, summary: 'refreshed'})
    const done = await feed.find('the command result', commandIn(id, 'succeeded'))
    expect(done).toMatchObject({node_id: A, command: 'refresh', result: {ok: true, summary: 'refreshed'}})
  })

  it("a rollout, the driver's step and a user's actions arrive as rollouts events; the node's status follows", async () => {
    const feed = await open('vera')
    const r = (await as('olga').upgrade({node: R}, {image: `${API}@${digest['v1.1']}`})) as RolloutView
    await feed.find('the rollout started', rolloutIn(r.id, 'running'))
    await t.hq.rollouts.tick()
    await feed.find('the node upgrading', nodeIn(R, (n) => n.status === 'upgrading'))
    await as('olga').rolloutAction(r.id, 'pause')
    await feed.find('the rollout paused', rolloutIn(r.id, 'paused'))
    await as('olga').rolloutAction(r.id, 'abort')
    const aborted = await feed.find('the rollout aborted', rolloutIn(r.id, 'aborted'))
    expect(aborted.reason).toBe('aborted by olga')
  })

  it('?types= narrows a stream to what it asked for', async () => {
    const all = await open('vera')
    const onlyAlerts = await open('vera', ['alerts'])
    await as('olga').runModeAction(A, 'pause')
    await all.find('the pause', nodeIn(A, (n) => n.run_mode === 'paused'))
    // A heartbeat (a nodes event) and the alert it raises (an alerts event), both after the pause.
    await heartbeat(B, {disk: 98})
    await t.hq.alerts.tick()
    await onlyAlerts.find('the alert', alertIn((a) => a.rule === 'disk-critical' && a.node_id === B))
    await all.find('the alert on the full stream too', alertIn((a) => a.rule === 'disk-critical' && a.node_id === B))
    expect(all.events.some((e) => e.type === 'nodes')).toBe(true)
    expect(new Set(onlyAlerts.events.map((e) => e.type))).toEqual(new Set(['ready', 'alerts']))
    await as('olga').runModeAction(A, 'resume')
  })

  it('a stream cut under its reader ends the iterator with a typed error, never silently', async () => {
    const feed = await open('vera')
    // What a network failure (or HQ dropping a client that fell behind) looks like to the reader.
    expect(t.hq.sockets.destroy([certInfo(users.vera!.bundle.cert).serial])).toBeGreaterThanOrEqual(1)
    await feed.finished
    expect(feed.error).toMatchObject({code: 'EVENTS_DROPPED', status: 503})
  })

  it('closing HQ with streams open returns, and the streams end cleanly', async () => {
    const feed = await open('vera')
    // Would hang (and time the test out) if a stream held the shutdown.
    await t.hq.close()
    await feed.finished
    expect(feed.done).toBe(true)
    expect(feed.error).toBeUndefined()
  })
})

describe.runIf(hasPg)('the live fleet stream across two HQ replicas on one PostgreSQL', () => {
  it('an event caused on replica A reaches a subscriber on replica B', async () => {
    const db = await freshPgDatabase()
    const a = await startTestHq({databaseUrl: db.url})
    const tmp = await tempDir()
    const dir2 = join(tmp.dir, 'replica')
    await cp(a.dataDir, dir2, {recursive: true})
    await rm(join(dir2, 'hq.lock'), {force: true})
    const b = await startHq({dataDir: dir2, listen: {host: '127.0.0.1', port: 0}, clock: systemClock, logger: pino({level: 'silent'}), version: 't'})
    const onB = await HqClient.connect(b.url, a.admin)
    const node = 'DE-EVRP-01'
    let n: Awaited<ReturnType<typeof connectTestNode>> | undefined
    let feed: Feed | undefined
    try {
      feed = await Feed.open(onB)
      // Admitted, joined and heartbeating, all through replica A.
      n = await connectTestNode(a.hq, a.admin, {nodeId: node, zone: 'DE/BAFIN'})
      await feed.find('the join, on B', nodeIn(node, (x) => x.joined_at !== null))
      await n.client.heartbeat(testHeartbeat(node, new Date(), {services: [], certValidMs: 20 * DAY}))
      await feed.find("A's coalesced heartbeat flush, on B", nodeIn(node, (x) => x.last_heartbeat_at !== null))
      const onA = await HqClient.connect(a.hq.url, a.admin)
      try {
        const sent = await onA.sendCommand('refresh', {node})
        await feed.find('the command, on B', commandIn(sent.commands[0]!.id, 'pending'))
      } finally {
        await onA.close()
      }
    } finally {
      await feed?.close()
      await onB.close()
      await n?.client.close()
      await n?.node.cleanup()
      await b.close()
      await a.stop()
      await tmp.cleanup()
      await db.drop()
    }
  })
})
