import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilOk, startCliHq, type CliHq} from '../helpers/cli.js'

const NODE = 'AU-FCLI-01'
const PENDING = 'AU-FCLI-02'

/** `jil fleet node|stop|start|pause|resume|broadcast` as a user runs them, against a real `jil hq serve`. */
describe('jil fleet commands (CLI)', () => {
  let cli: CliHq
  const ok = (args: string[]) => jilOk(args, cli.env)

  beforeAll(async () => {
    cli = await startCliHq('jil-fcli-')
    await ok(['hq', 'operator', 'add', 'Southern Cross Nodes', '--kyc', 'approved'])
    const token = (await ok(['hq', 'token', 'create', '--node-id', NODE, '--jurisdiction', 'AU/ASIC', '--operator', 'Southern Cross Nodes', '--json'])).json().token as string
    await ok(['hq', 'token', 'create', '--node-id', PENDING, '--jurisdiction', 'AU/ASIC', '--operator', 'Southern Cross Nodes'])
    const state = join(cli.tmp.dir, 'node')
    await ok(['node', 'init', '--node-id', NODE, '--region', 'ap-sydney', '--jurisdiction', 'AU/ASIC', '--operator', 'Southern Cross Nodes', '--hq', cli.serve.ready.url, '--state-dir', state])
    await ok(['node', 'join', '--token', token, '--ca-fingerprint', cli.fingerprint, '--state-dir', state])
  })
  afterAll(async () => {
    await cli?.stop()
  })

  it('pause, resume, stop and start change the run mode; fleet node shows desired vs applied', async () => {
    const paused = (await ok(['fleet', 'pause', NODE, '--json'])).json()
    expect(paused).toMatchObject({node_id: NODE, action: 'pause', run_mode: 'paused', previous_run_mode: 'running', changed: true, command_id: expect.stringMatching(/^cmd_/)})
    const again = await ok(['fleet', 'pause', NODE.toLowerCase()])
    expect(again.stderr).toContain(`${NODE} is already paused; refresh sent`)
    const shown = (await ok(['fleet', 'node', NODE, '--json'])).json()
    expect(shown).toMatchObject({id: NODE, zone: 'AU/ASIC', status: 'offline', run_mode: 'paused', state: {desired: {run_mode: 'paused'}, applied: null, in_sync: null}})
    const human = await ok(['fleet', 'node', NODE])
    expect(human.stdout).toMatch(/run mode\s+paused/)
    expect(human.stdout).toMatch(/desired\s+paused/)
    expect((await ok(['fleet', 'resume', NODE, '--json'])).json()).toMatchObject({run_mode: 'running'})
    expect((await ok(['fleet', 'stop', NODE, '--json'])).json()).toMatchObject({run_mode: 'stopped'})
    expect((await ok(['fleet', 'start', NODE, '--json'])).json()).toMatchObject({run_mode: 'running', previous_run_mode: 'stopped'})
  })

  it('broadcast sends and reports each node; no answer within --wait is a failure (exit 1)', async () => {
    const sent = await ok(['fleet', 'broadcast', 'refresh', '--all', '--wait', '0s', '--json'])
    expect(sent.json()).toMatchObject({command: 'refresh', target: 'all', ok: true, results: [{node_id: NODE, status: 'pending', command_id: expect.stringMatching(/^cmd_/)}]})
    // No daemon runs for the node: nobody answers.
    const r = await jil(['fleet', 'broadcast', 'cycle', '--jurisdiction', 'AU/ASIC', '--wait', '1s', '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json()).toMatchObject({ok: false, target: 'zone/AU/ASIC', results: [{node_id: NODE, status: 'timeout', error: {code: 'TIMEOUT'}}]})
  })

  it('bad input: unknown or pending node → clear error, exit 1; no or two targets → exit 2', async () => {
    let r = await jil(['fleet', 'stop', 'AU-NOPE-01', '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json().error).toMatchObject({code: 'NODE_UNKNOWN', message: 'no node AU-NOPE-01'})
    r = await jil(['fleet', 'node', 'AU-NOPE-01'], cli.env)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('Error: no node AU-NOPE-01')
    r = await jil(['fleet', 'pause', PENDING, '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json().error.code).toBe('NODE_NOT_ACTIVE')
    r = await jil(['fleet', 'broadcast', 'refresh', '--jurisdiction', 'JP/JFSA', '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json().error.code).toBe('NO_NODES')
    r = await jil(['fleet', 'broadcast', 'refresh', '--json'], cli.env)
    expect(r.code).toBe(2)
    expect(r.json().error.code).toBe('TARGET_REQUIRED')
    r = await jil(['fleet', 'broadcast', 'refresh', '--all', '--node', NODE, '--json'], cli.env)
    expect(r.code).toBe(2)
    r = await jil(['fleet', 'broadcast', 'explode', '--all', '--json'], cli.env)
    expect(r.code).toBe(2)
    r = await jil(['fleet', 'stop', 'not-a-node', '--json'], cli.env)
    expect(r.code).toBe(2)
    expect(r.json().error.code).toBe('NODE_ID_INVALID')
  })
})
