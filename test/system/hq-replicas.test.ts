import {createHmac} from 'node:crypto'
import {cp, readFile, rm} from 'node:fs/promises'
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {AlertView} from '../../src/shared/alerts.js'
import {defaultProfilePath, readBundle, type UserBundle} from '../../src/shared/bundle.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import type {WebhookView} from '../../src/shared/webhooks.js'
import {jilOk, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {joinTestNode, testHeartbeat, userClient} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

const SECRET = 'replica-test-shared-secret-0123456789'
const NODE = 'CH-REPL-01'

type Received = {delivery: string; status: number; type: string; fingerprint: string; verified: boolean}
type Replica = {name: string; serve: Awaited<ReturnType<typeof jilServe>>; url: string}

/**
 * Two real `jil hq serve` processes on one PostgreSQL, sharing the data dir's keys (a copy of it,
 * as DESIGN §7 deploys replicas): both evaluate every second and poll deliveries every 100 ms, and
 * still the fleet is evaluated by one and every notification reaches the receiver once (a retry
 * after a 503 is the same delivery, sent once more). Killing the evaluating replica hands the work
 * to the other.
 */
describe.runIf(hasPg)('two HQ processes on one PostgreSQL', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: Awaited<ReturnType<typeof freshPgDatabase>>
  let server: Server
  let admin: UserBundle
  let node: HqClient | undefined
  const replicas: Replica[] = []
  const got: Received[] = []
  const clients: HqClient[] = []

  /** The replica's figures: evaluations it made (ok) and ticks it stood by. */
  async function evaluations(r: Replica): Promise<{ok: number; standby: number}> {
    const c = await userClient(r.url, admin)
    try {
      const text = await c.request<string>('GET', '/metrics')
      const n = (outcome: string) => Number(new RegExp(`jil_hq_alert_evaluations_total\\{outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1] ?? 0)
      return {ok: n('ok'), standby: n('standby')}
    } finally {
      await c.close()
    }
  }
  let nodeStateDir = ''
  const heartbeat = (disk: number) => node!.heartbeat(testHeartbeat(NODE, new Date(), {services: [], diskPercent: disk, certValidMs: 20 * 86_400_000}))
  /** Resolves once `fn` holds (polled every 500 ms). */
  const holds = (what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 30_000) => until(what, async () => ((await fn()) ? true : undefined), timeoutMs)
  const sent = (fingerprint: string, type: string) => got.filter((g) => g.fingerprint === fingerprint && g.type === type)

  beforeAll(async () => {
    // The receiver answers 503 to the first attempt of every delivery, then 200.
    server = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => (body += d))
      req.on('end', () => {
        const ts = req.headers['x-jil-timestamp'] as string
        const delivery = req.headers['x-jil-delivery'] as string
        const p = JSON.parse(body) as {type: string; alert?: AlertView}
        const status = got.some((g) => g.delivery === delivery) ? 200 : 503
        got.push({delivery, status, type: p.type, fingerprint: p.alert?.fingerprint ?? '', verified: req.headers['x-jil-signature'] === `sha256=${createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex')}`})
        res.writeHead(status).end()
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    tmp = await tempDir('jil-replicas-')
    pg = await freshPgDatabase()
    const env: NodeJS.ProcessEnv = {
      XDG_CONFIG_HOME: join(tmp.dir, 'config'),
      JIL_USER: '',
      JIL_HQ_URL: '',
      JIL_STATE_DIR: '',
      JIL_NODE_ID: '',
      JIL_DATABASE_URL: pg.url,
      JIL_ALERT_EVERY_MS: '1000',
      JIL_WEBHOOK_POLL_MS: '100',
      JIL_WEBHOOK_BACKOFF_MS: '300',
    }
    const first = await startHqProcess(tmp.dir, env)
    replicas.push({name: 'one', serve: first.serve, url: first.serve.ready.url as string})
    // The second replica: the same keys and config (a copy of the data dir), its own lock.
    const second = join(tmp.dir, 'hq2')
    await cp(first.hqDir, second, {recursive: true})
    await rm(join(second, 'hq.lock'), {force: true})
    const serve = await jilServe(['hq', 'serve', '--data-dir', second, '--listen', '127.0.0.1:0', '--json'], env)
    replicas.push({name: 'two', serve, url: serve.ready.url as string})
    expect(JSON.parse(await readFile(join(second, 'config.json'), 'utf8'))).toMatchObject({database_url: pg.url})

    admin = await readBundle(defaultProfilePath(env))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    const add = await jilOk(['alerts', 'webhook', 'add', url, '--json'], {...env, JIL_HQ_URL: replicas[0]!.url, JIL_WEBHOOK_SECRET: SECRET})
    expect(add.json() as WebhookView).toMatchObject({url, format: 'generic'})

    // A node joined through one replica, heard from through the other.
    const joined = await joinTestNode({url: replicas[0]!.url, caFingerprint: first.fingerprint}, admin, {nodeId: NODE})
    nodeStateDir = joined.stateDir
    const id = await loadNodeIdentity(joined.stateDir)
    node = await HqClient.connect(replicas[1]!.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    clients.push(node)
    await heartbeat(40)
  }, 120_000)

  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => {})
    for (const r of replicas) {
      if (r.serve.child.exitCode === null && r.serve.child.signalCode === null) {
        r.serve.child.kill('SIGTERM')
        await r.serve.exited
      }
    }
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
    await pg?.drop()
    await tmp?.cleanup()
  })

  it('one replica evaluates, the other stands by; each notification is delivered once, its retry by either', async () => {
    const fp = `disk-critical:${NODE}`
    await heartbeat(96)
    await holds('the opening delivered', () => sent(fp, 'alert.opened').some((g) => g.status === 200))
    await heartbeat(40)
    await holds('the resolution delivered', () => sent(fp, 'alert.resolved').some((g) => g.status === 200))
    // Three more evaluation periods on both replicas: nothing more is sent.
    await new Promise((r) => setTimeout(r, 3_500))

    // One opening, one resolution: each its own delivery, attempted twice (503, then 200), signed.
    for (const type of ['alert.opened', 'alert.resolved']) {
      const attempts = sent(fp, type)
      expect(attempts.map((a) => a.status), type).toEqual([503, 200])
      expect(new Set(attempts.map((a) => a.delivery)).size, type).toBe(1)
    }
    expect(got.every((g) => g.verified)).toBe(true)

    // Both replicas ticked every second; exactly one evaluated, the other only stood by.
    const figures = await Promise.all(replicas.map(evaluations))
    const leader = figures.findIndex((f) => f.ok > 0)
    expect(leader).toBeGreaterThanOrEqual(0)
    expect(figures[leader]).toMatchObject({standby: 0})
    expect(figures[1 - leader]).toMatchObject({ok: 0})
    expect(figures[1 - leader]!.standby).toBeGreaterThan(2)
  }, 90_000)

  it('the evaluating replica killed (SIGKILL), the other takes over and notifies once', async () => {
    const figures = await Promise.all(replicas.map(evaluations))
    const leader = replicas[figures.findIndex((f) => f.ok > 0)]!
    const standby = replicas.find((r) => r !== leader)!
    leader.serve.child.kill('SIGKILL')
    await leader.serve.exited
    // The node talks to the survivor (its client may have been connected to either).
    if (standby !== replicas[1]) {
      const id = await loadNodeIdentity(nodeStateDir)
      node = await HqClient.connect(standby.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
      clients.push(node)
    }

    const fp = `disk-critical:${NODE}`
    const before = sent(fp, 'alert.opened').length
    await heartbeat(97)
    // PostgreSQL frees the dead session's advisory lock; the survivor takes it at its next tick.
    await holds('the survivor evaluating', async () => (await evaluations(standby)).ok > 0)
    await holds('the new opening delivered', () => sent(fp, 'alert.opened').slice(before).some((g) => g.status === 200))
    await new Promise((r) => setTimeout(r, 2_500))
    const attempts = sent(fp, 'alert.opened').slice(before)
    expect(attempts.map((a) => a.status)).toEqual([503, 200])
    expect(new Set(attempts.map((a) => a.delivery)).size).toBe(1)
  }, 90_000)
})
