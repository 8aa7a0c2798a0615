import {execFileSync, spawnSync} from 'node:child_process'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {HqClient} from '../../src/shared/hq-client.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import {BIN, jil, jilOk, startCliHq, type CliHq} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {testHeartbeat} from '../helpers/node.js'
import {until} from '../helpers/wait.js'

describe('jil top without a terminal', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  beforeAll(async () => {
    tmp = await tempDir('jil-top-')
  })
  afterAll(async () => tmp.cleanup())

  it('refuses with exit 2 and points to jil fleet nodes --json', async () => {
    // Pipes, not a TTY: what a script or cron job gives it. No HQ is needed to refuse.
    const env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_HQ_URL: '', JIL_USER: ''}
    const r = await jil(['top'], env)
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain('Error: jil top needs a terminal (stdin and stdout must be a TTY)')
    expect(r.stderr).toContain('Hint: in scripts and pipes use jil fleet nodes --json')
  })

  it('refuses --json with a clear error', async () => {
    const r = await jil(['top', '--json'], {XDG_CONFIG_HOME: join(tmp.dir, 'config')})
    expect(r.code).toBe(2)
    expect(r.json()).toEqual({error: {code: 'JSON_UNSUPPORTED', message: 'jil top is an interactive dashboard and has no --json output', hint: expect.stringContaining('jil fleet nodes --json')}})
  })

  it('has help that names its keys and --readonly', async () => {
    const r = await jil(['top', '--help'], {})
    expect(r.code).toBe(0)
    const help = r.stdout.replace(/\s+/g, ' ')
    expect(help).toContain('--readonly')
    expect(help).toContain('jil fleet nodes --json')
  })
})

const hasTmux = spawnSync('tmux', ['-V']).status === 0
if (!hasTmux && process.env.CI) throw new Error('tmux is not installed: scripts/test-services.sh start installs it')

/**
 * The end-to-end test of the issue: `jil top` in a real terminal (tmux) against a real `jil hq serve`
 * with joined nodes, read with capture-pane: filter to a zone, open a node, pause it, and see the
 * status change arrive over HQ's live stream.
 */
describe.skipIf(!hasTmux)('jil top in a terminal (tmux)', () => {
  let cli: CliHq
  const socket = `jil-top-${process.pid}`
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], {encoding: 'utf8'})
  const screen = () => tmux('capture-pane', '-p', '-t', 'top')
  const keys = (...k: string[]) => tmux('send-keys', '-t', 'top', ...k)
  const text = (s: string) => tmux('send-keys', '-t', 'top', '-l', s)
  const see = (what: string, test: (s: string) => boolean) =>
    until(what, async () => (test(screen()) ? true : undefined), 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\n--- screen ---\n${screen()}`)
    })
  const nodes: HqClient[] = []

  beforeAll(async () => {
    cli = await startCliHq('jil-top-tmux-')
    const ok = (args: string[]) => jilOk(args, cli.env)
    await ok(['hq', 'operator', 'add', 'Acme Nodes', '--kyc', 'approved'])
    for (const [id, zone] of [['CH-ZUG-01', 'CH/FINMA'], ['CH-GVA-01', 'CH/FINMA'], ['SG-MAS-01', 'SG/MAS']] as const) {
      const token = (await ok(['hq', 'token', 'create', '--node-id', id, '--jurisdiction', zone, '--operator', 'Acme Nodes', '--json'])).json().token as string
      const state = join(cli.tmp.dir, id)
      await ok(['node', 'init', '--node-id', id, '--region', 'test', '--jurisdiction', zone, '--operator', 'Acme Nodes', '--hq', cli.serve.ready.url, '--state-dir', state])
      await ok(['node', 'join', '--token', token, '--ca-fingerprint', cli.fingerprint, '--state-dir', state])
      // A heartbeat with the node's own identity, as its health agent sends it: the node is up.
      const identity = await loadNodeIdentity(state)
      const client = await HqClient.connect(cli.serve.ready.url, {cert: identity.certPem, key: identity.keyPem, ca: identity.caPem})
      nodes.push(client)
      // CH-ZUG-01 syncs events and is behind; the others report no sync.
      const sync = id === 'CH-ZUG-01' ? {sync: {lag_s: 4.2, caught_up: false, outbox_backlog: 3, gaps: 0}} : {}
      await client.heartbeat(testHeartbeat(id, new Date(), {services: [{name: 'api', critical: true, state: 'running', health: 'healthy', digest: null, version: 'v95.3'}], certValidMs: 30 * 86_400_000, ...sync}))
    }
    tmux(
      'new-session', '-d', '-s', 'top', '-x', '120', '-y', '40',
      '-e', `XDG_CONFIG_HOME=${cli.env.XDG_CONFIG_HOME}`, '-e', `JIL_HQ_URL=${cli.env.JIL_HQ_URL}`, '-e', 'JIL_USER=',
      // The exit status is printed after jil top leaves the alternate screen; the pane stays to be read.
      `'${process.execPath}' '${BIN}' top; echo "jil top exited $?"; sleep 600`,
    )
  }, 180_000)

  afterAll(async () => {
    spawnSync('tmux', ['-L', socket, 'kill-server'])
    for (const c of nodes) await c.close()
    await cli?.stop()
  })

  it('filters to a zone, pauses a node from its detail view and sees its status change', async () => {
    await see('the overview, live', (s) => s.includes('● live') && /3 nodes\s+healthy 3/.test(s))
    expect(screen()).toContain('event sync: median 4.2s, max 4.2s (CH-ZUG-01), 1 of 1 nodes behind')
    expect(screen()).toMatch(/jil top {2}● live {2}https:\/\/127\.0\.0\.1:\d+ {2}admin \(admin\)/)

    keys('2')
    await see('the node list', (s) => s.includes('3 of 3 nodes'))
    keys('/')
    text('zone:CH/FINMA')
    keys('Enter')
    await see('the filtered list', (s) => s.includes('2 of 3 nodes') && !s.includes('SG-MAS-01'))
    expect(screen()).toMatch(/> CH-GVA-01\s+CH\/FINMA\s+active/)
    expect(screen()).toMatch(/CH-ZUG-01\s+CH\/FINMA\s+active/)
    // The SYNC column: the lag of a node behind, - for one that reports no sync.
    expect(screen()).toMatch(/CH-ZUG-01 .*\s4\.2s\s/)
    expect(screen()).toMatch(/CH-GVA-01 .*\s-\s+\d+d\s*$/m)

    keys('Down', 'Enter')
    await see('the detail of CH-ZUG-01', (s) => s.includes('CH-ZUG-01  CH/FINMA') && s.includes('desired vs applied: run mode running/running'))
    // The services of its last heartbeat, as HQ's detail gives them, and its event sync.
    expect(screen()).toMatch(/api\*\s+running\s+healthy\s+v95\.3\s+-\s+none/)
    expect(screen()).toContain('event sync: lag 4.2s, behind, outbox backlog 3, gaps 0')
    keys('p')
    await see('the confirmation', (s) => s.includes('Pause CH-ZUG-01: fail /healthz so traffic drains (services keep running)? [y/N]'))
    keys('y')
    await see('the result line', (s) => s.includes('✓ CH-ZUG-01: run mode running → paused'))
    // The new status comes over the stream (the row), and the detail follows it.
    await see('the paused status', (s) => /CH-ZUG-01 {2}CH\/FINMA {2}\S+ {2}operator Acme Nodes {2}paused {2}run mode paused/.test(s))
    await see('desired paused', (s) => s.includes('desired vs applied: run mode paused/running'))

    keys('Escape')
    await see('the list again', (s) => /CH-ZUG-01\s+CH\/FINMA\s+paused/.test(s))
    expect((await jilOk(['fleet', 'node', 'CH-ZUG-01', '--json'], cli.env)).json()).toMatchObject({status: 'paused', run_mode: 'paused'})

    keys('q')
    await see('jil top gone', (s) => s.includes('jil top exited 0'))
  })
})
