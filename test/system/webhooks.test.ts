import {createHmac} from 'node:crypto'
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {DeliveryView, WebhookView} from '../../src/shared/webhooks.js'
import {jil, jilOk, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

const SECRET = 'system-test-shared-secret-0123456789'

/** `jil alerts webhook …` as a user runs them, against a real `jil hq serve` that is killed and restarted. */
describe('jil alerts webhook (CLI, HQ process)', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let hqDir: string
  let env: NodeJS.ProcessEnv
  let server: Server
  const got: {at: number; body: string; delivery: string; verified: boolean}[] = []
  const ok = (args: string[]) => jilOk(args, env)

  beforeAll(async () => {
    // The receiver fails the first attempt (503), then accepts.
    server = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => (body += d))
      req.on('end', () => {
        const ts = req.headers['x-jil-timestamp'] as string
        const verified = req.headers['x-jil-signature'] === `sha256=${createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex')}`
        got.push({at: Date.now(), body, delivery: req.headers['x-jil-delivery'] as string, verified})
        res.writeHead(got.length === 1 ? 503 : 200).end()
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    tmp = await tempDir('jil-whcli-')
    // Polled every 200 ms; the retry is due 5 s (±20 %) after the first attempt: time enough to kill HQ in between.
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: '', JIL_WEBHOOK_POLL_MS: '200', JIL_WEBHOOK_BACKOFF_MS: '5000'}
    const hq = await startHqProcess(tmp.dir, env)
    serve = hq.serve
    hqDir = hq.hqDir
  })
  afterAll(async () => {
    if (serve?.child.exitCode === null) {
      serve.child.kill('SIGTERM')
      await serve.exited
    }
    await tmp?.cleanup()
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  })

  it('refuses an ftp:// URL and a missing secret (exit 2), lists without the secret', async () => {
    const ftp = await jil(['alerts', 'webhook', 'add', 'ftp://files.example.com/x', '--secret', SECRET, '--json'], env)
    expect(ftp.code).toBe(2)
    expect(ftp.json()).toMatchObject({error: {code: 'WEBHOOK_URL_INVALID'}})
    const noSecret = await jil(['alerts', 'webhook', 'add', 'https://ops.example.com/x', '--json'], env)
    expect(noSecret.code).toBe(2)
    const unknown = await jil(['alerts', 'webhook', 'remove', `wh_${'0'.repeat(20)}`, '--json'], env)
    expect(unknown.code).toBe(1)
    expect(unknown.json()).toMatchObject({error: {code: 'WEBHOOK_UNKNOWN'}})
    const list = await ok(['alerts', 'webhook', 'list', '--json'])
    expect(list.json()).toEqual({webhooks: []})
  })

  it('HQ killed between attempts resumes delivery after restart', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    // The secret from the environment, kept out of the command line.
    const add = await jil(['alerts', 'webhook', 'add', url, '--json'], {...env, JIL_WEBHOOK_SECRET: SECRET})
    expect(add.code, add.stderr).toBe(0)
    const w = add.json() as WebhookView
    expect(w).toMatchObject({url, format: 'generic', secret_fingerprint: expect.stringMatching(/^sha256:/)})
    expect(add.stdout).not.toContain(SECRET)

    // The first attempt fails: test shows it, retrying later.
    const test = await ok(['alerts', 'webhook', 'test', w.id, '--wait', '20', '--json'])
    const first = test.json() as DeliveryView
    expect(first).toMatchObject({webhook_id: w.id, event: 'test', state: 'pending', attempts: 1, last_status: 503})
    serve.child.kill('SIGKILL')
    await serve.exited
    const killedAt = Date.now()
    expect(got).toHaveLength(1)

    const port = new URL(serve.ready.url as string).port
    serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', `127.0.0.1:${port}`, '--json'], env)
    let d = first
    for (let i = 0; i < 200 && d.state === 'pending'; i++) {
      await new Promise((r) => setTimeout(r, 150))
      d = ((await ok(['alerts', 'webhook', 'deliveries', '--webhook', w.id, '--json'])).json() as {deliveries: DeliveryView[]}).deliveries[0]!
    }
    expect(d).toMatchObject({id: first.id, state: 'delivered', attempts: 2, last_status: 200})
    expect(d.attempt_log.map((a) => a.status)).toEqual([503, 200])
    // Sent once more, by the restarted HQ: the same delivery, the same body, signed.
    expect(got).toHaveLength(2)
    expect(got[1]!.at).toBeGreaterThan(killedAt)
    expect(got.map((g) => g.delivery)).toEqual([first.id, first.id])
    expect(got[1]!.body).toBe(got[0]!.body)
    expect(got.every((g) => g.verified)).toBe(true)
    expect(JSON.parse(got[0]!.body)).toMatchObject({type: 'alert.test', delivery_id: first.id})

    const human = await ok(['alerts', 'webhook', 'deliveries'])
    expect(human.stdout).toMatch(new RegExp(`${first.id}\\s+${w.id}\\s+delivered\\s+2`))
    const removed = await ok(['alerts', 'webhook', 'remove', w.id, '--json'])
    expect(removed.json()).toMatchObject({id: w.id})
  }, 60_000)
})
