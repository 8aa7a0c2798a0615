import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {loadNodeIdentity} from '../../src/node/identity.js'
import {readBundle} from '../../src/shared/bundle.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {joinTestNode, type TestNode} from '../helpers/node.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))


describe.runIf(REGISTRY)('stacks and the node list through the CLI', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let env: NodeJS.ProcessEnv
  const digests: Record<string, string> = {}
  let node: TestNode | undefined
  const as = (who: string) => ['--user', join(tmp.dir, `${who}.json`)]
  const ok = async (args: string[]) => {
    const r = await jil(args, env)
    expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(0)
    return r
  }

  beforeAll(async () => {
    tmp = await tempDir('jil-stack-sys-')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: ''}
    await ok(['hq', 'init', '--data-dir', join(tmp.dir, 'hq')])
    serve = await jilServe(['hq', 'serve', '--data-dir', join(tmp.dir, 'hq'), '--listen', '127.0.0.1:0', '--json'], env)
    env.JIL_HQ_URL = serve.ready.url
    for (const [name, role] of [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['vera', 'viewer']]) await ok(['hq', 'user', 'add', name!, '--role', role!, '--out', join(tmp.dir, `${name}.json`)])
    // Two releases of jil/stack-sys, both promoted to testnet (in order: versions on a track only go up).
    for (const v of ['v1.0', 'v1.1']) {
      digests[v] = await pushTinyImage('jil/stack-sys', v)
      await ok(['hq', 'sign', `${REGISTRY}/jil/stack-sys:${v}`, '--version', v, '--commit', 'abcdef0', ...as('ci')])
      await ok(['hq', 'approve', `${REGISTRY}/jil/stack-sys@${digests[v]}`, '--track', 'testnet', ...as('olga')])
      await ok(['hq', 'promote', `${REGISTRY}/jil/stack-sys@${digests[v]}`, '--to', 'testnet', ...as('olga')])
    }
  })
  afterAll(async () => {
    await node?.cleanup()
    serve?.child.kill('SIGTERM')
    await serve?.exited
    await tmp?.cleanup()
  })

  it('refuses a bad stack file before sending it (exit 2, the field named), an unreadable one (exit 1) and an unknown track (exit 2)', async () => {
    const missing = await jil(['hq', 'stack', 'set', '--track', 'devnet', fixture('stack-missing-critical.json'), ...as('olga'), '--json'], env)
    expect(missing.code).toBe(2)
    expect(missing.json().error).toMatchObject({code: 'STACK_FILE_INVALID', message: expect.stringContaining('services.0.critical')})
    const dup = await jil(['hq', 'stack', 'set', '--track', 'devnet', fixture('stack-duplicate.json'), ...as('olga')], env)
    expect(dup.code).toBe(2)
    expect(dup.stderr).toMatch(/^Error: .*service app appears twice\nHint: /)
    await writeFile(join(tmp.dir, 'not.json'), 'services: [app]\n')
    const notJson = await jil(['hq', 'stack', 'set', '--track', 'devnet', join(tmp.dir, 'not.json'), ...as('olga'), '--json'], env)
    expect(notJson.code).toBe(2)
    expect(notJson.json().error.code).toBe('STACK_FILE_INVALID')
    const absent = await jil(['hq', 'stack', 'set', '--track', 'devnet', join(tmp.dir, 'nope.json'), ...as('olga'), '--json'], env)
    expect(absent.code).toBe(1)
    expect(absent.json().error.code).toBe('FILE_MISSING')
    const track = await jil(['hq', 'stack', 'set', '--track', 'staging', fixture('stack-sys.json'), ...as('olga'), '--json'], env)
    expect(track.code).toBe(2)
    expect(track.json().error.code).toBe('USAGE')
    expect((await jil(['hq', 'stack', 'show', ...as('olga')], env)).code).toBe(2) // --track is required
    const viewer = await jil(['hq', 'stack', 'set', '--track', 'devnet', fixture('stack-sys.json'), ...as('vera'), '--json'], env)
    expect(viewer.code).toBe(1)
    expect(viewer.json().error).toMatchObject({code: 'FORBIDDEN', permission: 'stack:manage'})
  })

  it('sets and shows a track\'s stack: devnet runs the newest signed version', async () => {
    const set = await ok(['hq', 'stack', 'set', '--track', 'devnet', fixture('stack-sys.json'), ...as('olga'), '--json'])
    expect(set.json()).toMatchObject({kind: 'jil.stack/v1', track: 'devnet', version: 1, created_by: 'olga', spec: {services: [{name: 'app'}, {name: 'sidecar'}]}})
    const shown = await ok(['hq', 'stack', 'show', '--track', 'devnet', ...as('vera')])
    expect(shown.stdout).toMatch(/^SERVICE\s+IMAGE\s+VERSION\s+DIGEST\s+CRITICAL/)
    expect(shown.stdout).toMatch(new RegExp(`app\\s+jil/stack-sys\\s+v1\\.1\\s+${digests['v1.1']!.slice(0, 19)}\\s+yes`))
    expect(shown.stdout).toMatch(/sidecar\s+jil\/stack-sys-sidecar\s+-\s+-\s+no/)
    const json = (await ok(['hq', 'stack', 'show', '--track', 'devnet', '--json', ...as('vera')])).json()
    expect(json).toMatchObject({track: 'devnet', stack: {version: 1}, versions: {app: {version: 'v1.1', digest: digests['v1.1']}, sidecar: null}})
    expect((await ok(['hq', 'stack', 'show', '--track', 'mainnet', '--json'])).json()).toEqual({track: 'mainnet', stack: null, versions: {}})
  })

  it('pins testnet versions; a downgrade needs --rollback and is signed with the user\'s key', async () => {
    const set = await ok(['hq', 'stack', 'set', '--track', 'testnet', fixture('stack-sys.json'), ...as('olga')])
    expect(set.stderr).toContain('Set the testnet stack to version 1')
    expect(set.stdout).toMatch(/^track\s+testnet\nversion\s+1\nservices\s+app,sidecar\n/)
    const devnet = await jil(['hq', 'stack', 'pin', '--track', 'devnet', 'app', 'v1.1', ...as('olga'), '--json'], env)
    expect(devnet.code).toBe(1)
    expect(devnet.json().error).toMatchObject({code: 'PIN_DEVNET', hint: expect.stringContaining('testnet')})
    expect((await jil(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'latest', ...as('olga'), '--json'], env)).code).toBe(2)
    expect((await jil(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'v1.1', ...as('vera'), '--json'], env)).json().error.code).toBe('FORBIDDEN')

    const up = await ok(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'v1.1', ...as('olga'), '--json'])
    expect(up.json()).toEqual({track: 'testnet', service: 'app', version: 'v1.1', digest: digests['v1.1'], from: null, rollback: false})
    const refused = await jil(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'v1.0', ...as('olga')], env)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/^Error: app on testnet runs v1\.1; v1\.0 is lower\nHint: .*--rollback/)
    const down = await ok(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'v1.0', '--rollback', ...as('olga'), '--json'])
    expect(down.json()).toEqual({track: 'testnet', service: 'app', version: 'v1.0', digest: digests['v1.0'], from: 'v1.1', rollback: true})
    const shown = await ok(['hq', 'stack', 'show', '--track', 'testnet', ...as('vera')])
    expect(shown.stdout).toMatch(/app\s+jil\/stack-sys\s+v1\.0\s+sha256:\S+\s+yes\s+olga/)
  })

  it('lists the fleet\'s nodes with status, versions and heartbeat age', async () => {
    const admin = await readBundle(join(tmp.dir, 'config', 'jil', 'profile.json'))
    node = await joinTestNode({url: serve.ready.url, caFingerprint: serve.ready.ca_fingerprint}, admin, {nodeId: 'CH-STKSYS-01', track: 'testnet'})
    await ok(['hq', 'token', 'create', '--node-id', 'SG-STKSYS-02', '--jurisdiction', 'SG/MAS', '--operator', 'Helvetia Nodes AG'])
    const id = await loadNodeIdentity(node.stateDir)
    const client = await HqClient.connect(serve.ready.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    try {
      const doc = await client.desiredState()
      expect(doc.services.map((s) => [s.name, s.version])).toEqual([['app', 'v1.0']])
      await client.heartbeat({
        node_id: 'CH-STKSYS-01',
        time: new Date().toISOString(),
        agent_version: '0.0.0-test',
        run_mode: 'running',
        desired_sequence: doc.sequence,
        containers: {total: 1, running: 1, healthy: 1, unhealthy: 0, exited: 0, restarting: 0, other: 0},
        services: [{name: 'app', critical: true, state: 'running', health: 'healthy', digest: digests['v1.0']!, version: 'v1.0'}],
        system: {cpu_percent: 3, load1: 0.1, memory_used_bytes: 1e9, memory_total_bytes: 8e9, disk_used_bytes: 1e10, disk_total_bytes: 1e11, disk_percent: 10},
        cert: {serial: id.cert.serial, not_after: id.cert.notAfter.toISOString()},
        agents: {},
      })
    } finally {
      await client.close()
    }
    const table = await ok(['fleet', 'nodes', ...as('vera')])
    expect(table.stdout).toMatch(/^ID\s+ZONE\s+STATUS\s+TRACK\s+VERSIONS\s+HEARTBEAT\n/)
    expect(table.stdout).toMatch(/CH-STKSYS-01\s+CH\/FINMA\s+active\s+testnet\s+app=v1\.0\s+\d+s\n/)
    expect(table.stdout).toMatch(/SG-STKSYS-02\s+SG\/MAS\s+pending\s+mainnet\s+-\s+never/)
    const json = (await ok(['fleet', 'nodes', '--jurisdiction', 'SG_MAS', '--json', ...as('vera')])).json()
    expect(json.nodes.map((n: {id: string; status: string}) => [n.id, n.status])).toEqual([['SG-STKSYS-02', 'pending']])
    expect((await ok(['fleet', 'nodes', '--status', 'active', '--json'])).json().nodes.map((n: {id: string}) => n.id)).toEqual(['CH-STKSYS-01'])
    expect((await jil(['fleet', 'nodes', '--jurisdiction', 'switzerland', '--json'], env)).json().error.code).toBe('ZONE_INVALID')
    expect((await jil(['fleet', 'nodes', '--jurisdiction', 'switzerland'], env)).code).toBe(2)
    expect((await jil(['fleet', 'nodes', '--status', 'sleeping'], env)).code).toBe(2)
  })
})
