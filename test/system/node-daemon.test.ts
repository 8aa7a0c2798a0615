import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {containersOf, removeContainersOf} from '../helpers/images.js'
import {until} from '../helpers/wait.js'

const IMAGE = process.env.JIL_TEST_IMAGE
const DOCKER = process.env.JIL_TEST_DOCKER_HOST
const NODE = 'SG-E2E-01'

/**
 * The whole path as an operator walks it, every piece a real process: HQ serving, a release signed
 * from the real registry, a stack set for devnet, a node admitted and joined, `jil daemon` bringing
 * the node's stack up on the real engine, /healthz turning 200, HQ listing the node active.
 */
describe.runIf(IMAGE && DOCKER)('a fresh node comes up with its whole stack under jil daemon', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let daemon: Awaited<ReturnType<typeof jilServe>> | undefined
  let env: NodeJS.ProcessEnv
  let state: string
  const ok = async (args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const r = await jil(args, {...env, ...extra})
    expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(0)
    return r
  }

  beforeAll(async () => {
    tmp = await tempDir('jil-e2e-')
    state = join(tmp.dir, 'node')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: ''}
    const hq = await startHqProcess(tmp.dir, env)
    serve = hq.serve
    const fingerprint = hq.fingerprint

    await ok(['hq', 'sign', IMAGE!, '--version', 'v1.0', '--commit', 'abcdef1'])
    const stack = {
      services: [
        {name: 'api', image: 'jil/busybox', command: ['sh', '-c', 'touch /tmp/ready; exec sleep 3600'], network: 'none', critical: true, health: {test: ['CMD-SHELL', 'test -f /tmp/ready'], interval_s: 1, retries: 2}},
        {name: 'worker', image: 'jil/busybox', command: ['sleep', '3600'], network: 'none', critical: false, user: '1000', grace_s: 1},
      ],
    }
    await writeFile(join(tmp.dir, 'stack.json'), JSON.stringify(stack))
    await ok(['hq', 'stack', 'set', '--track', 'devnet', join(tmp.dir, 'stack.json')])
    await ok(['hq', 'operator', 'add', 'Lion City Nodes', '--kyc', 'approved'])
    const token = (await ok(['hq', 'token', 'create', '--node-id', NODE, '--jurisdiction', 'SG/MAS', '--operator', 'Lion City Nodes', '--track', 'devnet', '--json'])).json().token as string
    await ok(['node', 'init', '--node-id', NODE, '--region', 'ap-singapore', '--jurisdiction', 'SG/MAS', '--operator', 'Lion City Nodes', '--hq', serve.ready.url, '--state-dir', state])
    await ok(['node', 'join', '--token', token, '--ca-fingerprint', fingerprint, '--state-dir', state])
  })

  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null) {
      daemon.child.kill('SIGTERM')
      await daemon.exited
    }
    serve?.child.kill('SIGTERM')
    await serve?.exited
    await removeContainersOf(NODE).catch(() => {})
    await tmp?.cleanup()
  })

  it('brings the stack up, passes /healthz, reports to HQ, and stops cleanly on SIGTERM', async () => {
    const nodeEnv = {JIL_DOCKER_HOST: DOCKER, JIL_HEALTHZ_LISTEN: '127.0.0.1:0', JIL_JITTER: '0s', JIL_HEALTH_EVERY: '2s', JIL_LOG_LEVEL: 'warn'}
    daemon = await jilServe(['daemon', '--state-dir', state, '--json'], {...env, ...nodeEnv})
    expect(daemon.ready).toMatchObject({node_id: NODE, healthz: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/)})

    // The update run at start pulls nothing new (the image is local) but creates both services.
    const running = await until('both services running', async () => {
      const cs = await containersOf(NODE)
      return cs.filter((c) => c.state === 'running').length === 2 ? cs : undefined
    })
    expect(running.map((c) => c.name).sort()).toEqual([`jil-${NODE.toLowerCase()}-api`, `jil-${NODE.toLowerCase()}-worker`])
    expect(running.every((c) => c.image.includes('@sha256:'))).toBe(true)

    const healthz = await until('/healthz 200', async () => {
      const r = await fetch(`${daemon!.ready.healthz}/healthz`)
      return r.status === 200 ? ((await r.json()) as Record<string, unknown>) : undefined
    })
    expect(healthz).toMatchObject({status: 'ok'})
    // The update run that created them is counted once it has finished (health may report first).
    await until('the update run in /metrics', async () => {
      const text = await (await fetch(`${daemon!.ready.healthz}/metrics`)).text()
      return /jil_agent_runs_total\{agent="update",outcome="ok"[^}]*\} 1/.test(text) ? text : undefined
    })

    // HQ sees the node's heartbeat: active, running v1.0.
    const node = await until('the node active at HQ', async () => {
      const r = await jil(['fleet', 'nodes', '--json'], env)
      const n = r.json().nodes.find((x: {id: string}) => x.id === NODE)
      return n?.status === 'active' && n.versions?.api === 'v1.0' ? n : undefined
    })
    expect(node).toMatchObject({zone: 'SG/MAS', track: 'devnet', heartbeat_age_s: expect.any(Number)})

    // A one-shot security run from the CLI sees the root container (api) but not the one with a user.
    const sec = await jil(['agent', 'run', 'security', '--state-dir', state, '--json'], {...env, ...nodeEnv})
    expect(sec.code, sec.stderr).toBe(0)
    const ids = (sec.json().findings as {id: string}[]).map((f) => f.id)
    expect(ids).toContain('container-root:api')
    expect(ids).not.toContain('container-root:worker')
    expect(ids.filter((i) => i.startsWith('unsigned-image:'))).toEqual([])

    daemon.child.kill('SIGTERM')
    expect(await daemon.exited).toBe(0)
    // Stopping the daemon leaves the services running: it manages them, it does not own their lifetime.
    expect((await containersOf(NODE)).filter((c) => c.state === 'running')).toHaveLength(2)
  })
})
