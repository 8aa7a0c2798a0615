import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {configSha256} from '../../src/shared/config-docs.js'
import {jil, jilOk, startCliHq, type CliHq} from '../helpers/cli.js'

const NODE = 'KR-CCLI-01'
const OPERATOR = 'Han River Nodes'
const FEES = {schedule: 'KR-2026', bps: 9, caps: {daily_krw: 50_000_000}}

/** `jil fleet config push|show` as a user runs them, against a real `jil hq serve`. */
describe('jil fleet config (CLI)', () => {
  let cli: CliHq
  const ok = (args: string[]) => jilOk(args, cli.env)

  beforeAll(async () => {
    cli = await startCliHq('jil-ccli-')
    await ok(['hq', 'operator', 'add', OPERATOR, '--kyc', 'approved'])
    const token = (await ok(['hq', 'token', 'create', '--node-id', NODE, '--jurisdiction', 'KR/FSC', '--operator', OPERATOR, '--json'])).json().token as string
    const state = join(cli.tmp.dir, 'node')
    await ok(['node', 'init', '--node-id', NODE, '--region', 'ap-seoul', '--jurisdiction', 'KR/FSC', '--operator', OPERATOR, '--hq', cli.serve.ready.url, '--state-dir', state])
    await ok(['node', 'join', '--token', token, '--ca-fingerprint', cli.fingerprint, '--state-dir', state])
    await writeFile(join(cli.tmp.dir, 'Fees.json'), JSON.stringify(FEES, null, 2))
    await writeFile(join(cli.tmp.dir, 'broken.json'), '{"bps": 9,')
  })
  afterAll(async () => {
    await cli?.stop()
  })

  it('pushes a JSON file to a zone (named after the file), again is no change; fleet node and config show see it', async () => {
    const pushed = (await ok(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', join(cli.tmp.dir, 'Fees.json'), '--json'])).json()
    expect(pushed).toMatchObject({scope: 'zone', target: 'KR/FSC', name: 'fees', version: 1, changed: true, sha256: configSha256(FEES), nodes: [{node_id: NODE, command_id: expect.stringMatching(/^cmd_/)}]})
    const again = await ok(['fleet', 'config', 'push', '--jurisdiction', 'kr_fsc', join(cli.tmp.dir, 'Fees.json')])
    expect(again.stderr).toContain('already has this fees as v1')
    expect(again.stdout).toMatch(/changed\s+no/)

    const own = await ok(['fleet', 'config', 'push', '--node', NODE.toLowerCase(), join(cli.tmp.dir, 'Fees.json'), '--name', 'fees.override', '--json'])
    expect(own.json()).toMatchObject({scope: 'node', target: NODE, name: 'fees.override', version: 1})

    const node = (await ok(['fleet', 'node', NODE, '--json'])).json()
    expect(node.config).toMatchObject({desired_version: own.json().seq, applied_version: null, desired: [{name: 'fees', scope: 'zone'}, {name: 'fees.override', scope: 'node'}]})
    const human = await ok(['fleet', 'node', NODE])
    expect(human.stdout).toMatch(/config: desired v\d+, applied - \(not yet applied\)/)
    expect(human.stdout).toMatch(/fees\.override\s+node\s+1/)

    const shown = (await ok(['fleet', 'config', 'show', '--jurisdiction', 'KR/FSC', '--json'])).json()
    expect(shown).toMatchObject({scope: 'zone', target: 'KR/FSC', docs: [{name: 'fees', version: 1, content: FEES}]})
    expect((await ok(['fleet', 'config', 'show', '--node', NODE])).stdout).toMatch(/fees\.override\s+node/)
  })

  it('bad input: a non-JSON file or bad flags are usage errors (exit 2); an unknown node is exit 1; nothing is stored', async () => {
    let r = await jil(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', join(cli.tmp.dir, 'broken.json'), '--json'], cli.env)
    expect(r.code).toBe(2)
    expect(r.json().error).toMatchObject({code: 'CONFIG_FILE_INVALID', message: expect.stringContaining('is not JSON')})
    r = await jil(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', join(cli.tmp.dir, 'broken.json')], cli.env)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^Error: .*broken\.json is not JSON/m)
    expect(r.stderr).toMatch(/^Hint: /m)
    r = await jil(['fleet', 'config', 'push', join(cli.tmp.dir, 'Fees.json'), '--json'], cli.env)
    expect(r.code).toBe(2)
    expect(r.json().error.code).toBe('TARGET_REQUIRED')
    r = await jil(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', '--node', NODE, join(cli.tmp.dir, 'Fees.json'), '--json'], cli.env)
    expect(r.code).toBe(2)
    r = await jil(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', join(cli.tmp.dir, 'Fees.json'), '--name', '../x', '--json'], cli.env)
    expect(r.code).toBe(2)
    expect(r.json().error.code).toBe('CONFIG_NAME_INVALID')
    r = await jil(['fleet', 'config', 'push', '--jurisdiction', 'KR/FSC', join(cli.tmp.dir, 'missing.json'), '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json().error.code).toBe('FILE_MISSING')
    r = await jil(['fleet', 'config', 'push', '--node', 'KR-NOPE-01', join(cli.tmp.dir, 'Fees.json'), '--json'], cli.env)
    expect(r.code).toBe(1)
    expect(r.json().error).toMatchObject({code: 'NODE_UNKNOWN', message: 'no node KR-NOPE-01'})

    const shown = (await ok(['fleet', 'config', 'show', '--jurisdiction', 'KR/FSC', '--json'])).json()
    expect(shown.docs.map((d: {name: string; version: number}) => [d.name, d.version])).toEqual([['fees', 1]])
  })
})
