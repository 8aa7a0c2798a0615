import {existsSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {createConnection, createServer, type AddressInfo, type Server, type Socket} from 'node:net'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {DockerRuntime} from '../../src/node/runtime.js'
import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

const NODE = 'SG-DMNS-01'
const OPERATOR = 'Lion City Nodes'
const DOCKER_HOST = process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST!

/**
 * A TCP relay in front of HQ (TLS passes through it untouched, as through a layer-4 load balancer).
 * While it holds, new connections are accepted but nothing is relayed: every HQ call of the node
 * waits, exactly as with an HQ that answers slowly.
 */
class HqRelay {
  private held: Socket[] = []
  private holding = false
  private waiters: (() => void)[] = []
  private readonly server: Server
  private readonly open = new Set<Socket>()
  url = ''

  constructor(private readonly target: {host: string; port: number}) {
    this.server = createServer((client) => {
      this.open.add(client)
      client.on('close', () => this.open.delete(client))
      client.on('error', () => {})
      if (this.holding) {
        this.held.push(client)
        for (const w of this.waiters.splice(0)) w()
      } else this.relay(client)
    })
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  hold(): void {
    this.holding = true
  }

  /** Resolves once a connection is being held (a call of the node is in flight). */
  someoneWaits(): Promise<void> {
    return this.held.length > 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r))
  }

  release(): void {
    this.holding = false
    for (const c of this.held.splice(0)) this.relay(c)
  }

  private relay(client: Socket): void {
    const upstream = createConnection(this.target)
    this.open.add(upstream)
    upstream.on('close', () => this.open.delete(upstream))
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    client.pipe(upstream).pipe(client)
  }

  async close(): Promise<void> {
    for (const s of this.open) s.destroy()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

describe('jil daemon and jil agent run as child processes', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let relay: HqRelay
  let env: NodeJS.ProcessEnv
  let state: string

  beforeAll(async () => {
    tmp = await tempDir('jil-daemon-sys-')
    const hqDir = join(tmp.dir, 'hq')
    state = join(tmp.dir, 'node')
    env = {
      XDG_CONFIG_HOME: join(tmp.dir, 'config'),
      JIL_USER: '',
      JIL_DATABASE_URL: '',
      JIL_STATE_DIR: '',
      JIL_NODE_ID: '',
      JIL_HQ_URL: '',
      JIL_DOCKER_HOST: DOCKER_HOST,
      JIL_HEALTHZ_LISTEN: '127.0.0.1:0',
      JIL_JITTER: '0s',
      JIL_LOG_LEVEL: 'info',
    }
    const init = await jil(['hq', 'init', '--data-dir', hqDir, '--json'], env)
    expect(init.code, init.stderr).toBe(0)
    const config = JSON.parse(await readFile(join(hqDir, 'config.json'), 'utf8'))
    await writeFile(join(hqDir, 'config.json'), JSON.stringify({...config, join_minimums: {cpu_cores: 1, memory_bytes: 1, disk_bytes: 1}}), {mode: 0o600})
    serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    const hq = new URL(serve.ready.url)
    relay = new HqRelay({host: hq.hostname, port: Number(hq.port)})
    await relay.listen()
    const admin = {...env, JIL_HQ_URL: serve.ready.url}
    expect((await jil(['hq', 'operator', 'add', OPERATOR, '--kyc', 'approved', '--json'], admin)).code).toBe(0)
    const token = await jil(['hq', 'token', 'create', '--node-id', NODE, '--jurisdiction', 'SG/MAS', '--operator', OPERATOR, '--track', 'devnet', '--json'], admin)
    expect(token.code, token.stderr).toBe(0)
    // The node knows HQ only through the relay.
    const nodeInit = await jil(['node', 'init', '--node-id', NODE, '--region', 'sg-1', '--jurisdiction', 'SG/MAS', '--operator', OPERATOR, '--hq', relay.url, '--state-dir', state, '--json'], env)
    expect(nodeInit.code, nodeInit.stderr).toBe(0)
    const joined = await jil(['node', 'join', '--token', token.json().token, '--ca-fingerprint', init.json().ca_fingerprint, '--state-dir', state, '--json'], env)
    expect(joined.code, joined.stderr).toBe(0)
  })
  afterAll(async () => {
    relay?.release()
    if (serve) {
      serve.child.kill('SIGTERM')
      await serve.exited
    }
    await relay?.close()
    const runtime = await DockerRuntime.connect(DOCKER_HOST)
    for (const c of await runtime.list(NODE)) await runtime.remove(c.id)
    await tmp?.cleanup()
  })

  it('jil agent run: exit 1 with the JSON report when Docker is unreachable; 2 for an unknown agent', async () => {
    const r = await jil(['agent', 'run', 'health', '--state-dir', state, '--json'], {...env, JIL_DOCKER_HOST: 'unix:///nonexistent/docker.sock'})
    expect(r.code, r.stderr).toBe(1)
    const report = r.json()
    expect(report).toMatchObject({agent: 'health', node_id: NODE, ok: false, error: {code: 'DOCKER_UNREACHABLE'}, findings: []})
    // The run is recorded in the state dir all the same.
    expect(JSON.parse(await readFile(join(state, 'agents', 'health.json'), 'utf8'))).toMatchObject({agent: 'health', ok: false, started_at: report.started_at})

    const human = await jil(['agent', 'run', 'health', '--state-dir', state], {...env, JIL_DOCKER_HOST: 'unix:///nonexistent/docker.sock'})
    expect(human.code).toBe(1)
    expect(human.stdout).toMatch(new RegExp(`^health on ${NODE}: FAILED: `))
    expect(human.stderr).toMatch(/DOCKER_UNREACHABLE/)

    const bad = await jil(['agent', 'run', 'backup', '--state-dir', state, '--json'], env)
    expect(bad.code).toBe(2)
    expect(bad.json().error.code).toBe('USAGE')
  })

  it('jil agent run: exit 0 with the report when the agent did its job', async () => {
    const r = await jil(['agent', 'run', 'health', '--state-dir', state, '--json'], env)
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(r.json()).toMatchObject({agent: 'health', node_id: NODE, ok: true})
    const human = await jil(['agent', 'run', 'health', '--state-dir', state], env)
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(new RegExp(`^health on ${NODE}: ok: `))
  })

  it('jil daemon refuses a node that has not joined', async () => {
    const other = join(tmp.dir, 'unjoined')
    expect((await jil(['node', 'init', '--node-id', 'SG-DMNS-02', '--region', 'sg-1', '--jurisdiction', 'SG/MAS', '--state-dir', other], env)).code).toBe(0)
    const r = await jil(['daemon', '--state-dir', other, '--json'], env)
    expect(r.code).toBe(1)
    expect(r.json().error).toMatchObject({code: 'NODE_NOT_JOINED', hint: expect.stringContaining('jil node join')})
  })

  it('jil daemon: ready line, /healthz and /metrics; SIGTERM during a run waits for it, then exits 0', async () => {
    // Every HQ call of the node now hangs: the start-up runs (health, update) cannot finish.
    relay.hold()
    const d = await jilServe(['daemon', '--state-dir', state, '--json'], env)
    try {
      expect(d.ready).toEqual({node_id: NODE, healthz: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/), pid: d.child.pid})
      const h = await fetch(`${d.ready.healthz}/healthz`)
      expect([200, 503]).toContain(h.status)
      expect(await h.json()).toMatchObject({node_id: NODE})
      const m = await (await fetch(`${d.ready.healthz}/metrics`)).text()
      expect(m).toMatch(/^jil_healthz_status\{node="SG-DMNS-01"\} [01]$/m)

      await relay.someoneWaits()
      const finished = () =>
        d
          .stderr()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as {agent?: string; duration_ms?: number; msg?: string})
          .filter((l) => l.agent && l.duration_ms !== undefined)
      expect(finished()).toEqual([])
      d.child.kill('SIGTERM')
      for (let i = 0; i < 200 && !d.stderr().includes('waiting for the runs in flight'); i++) await new Promise((r) => setTimeout(r, 25))
      expect(d.stderr()).toContain('waiting for the runs in flight')
      // Stopping, but the runs are still in flight: the process is still there.
      expect(d.child.exitCode).toBe(null)
      expect(finished()).toEqual([])
      relay.release()
      expect(await d.exited).toBe(0)
      // Both start-up runs finished (and were logged) before the process ended.
      expect(finished().map((l) => l.agent).sort()).toEqual(['health', 'update'])
      expect(d.stderr()).toContain('"msg":"stopped"')
      expect(existsSync(join(state, 'agents', 'update.json'))).toBe(true)
      await expect(fetch(`${d.ready.healthz}/healthz`)).rejects.toThrow()
    } finally {
      relay.release()
      if (d.child.exitCode === null) d.child.kill('SIGKILL')
    }
  })
})
