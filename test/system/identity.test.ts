import {readFile, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

describe('users, operators and nodes through the CLI', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let env: NodeJS.ProcessEnv
  let hqDir: string
  let fingerprint: string

  beforeAll(async () => {
    tmp = await tempDir('jil-id-sys-')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: '', JIL_JOIN_TOKEN: ''}
    ;({serve, fingerprint, hqDir} = await startHqProcess(tmp.dir, env))
  })
  afterAll(async () => {
    serve?.child.kill('SIGTERM')
    await serve?.exited
    await tmp?.cleanup()
  })

  it('adds users with 0600 bundles; a viewer is refused what needs another role', async () => {
    const ops = await jil(['hq', 'user', 'add', 'olga', '--role', 'ops-lead', '--out', join(tmp.dir, 'olga.json'), '--json'], env)
    expect(ops.code, ops.stderr).toBe(0)
    expect(ops.json()).toMatchObject({name: 'olga', role: 'ops-lead', bundle: join(tmp.dir, 'olga.json')})
    expect((await stat(join(tmp.dir, 'olga.json'))).mode & 0o777).toBe(0o600)
    const again = await jil(['hq', 'user', 'add', 'olga', '--role', 'viewer', '--out', join(tmp.dir, 'olga.json'), '--json'], env)
    expect(again.json().error.code).toBe('FILE_EXISTS')
    // An --out HQ could not be written to is refused before anything is issued.
    const blocked = await jil(['hq', 'user', 'add', 'nina', '--role', 'viewer', '--out', join(tmp.dir, 'olga.json', 'nina.json'), '--json'], env)
    expect(blocked.code).toBe(1)
    expect(blocked.json().error.code).toBe('FILE_UNWRITABLE')
    expect((await jil(['hq', 'user', 'list', '--json'], env)).json().users.map((u: {name: string}) => u.name)).not.toContain('nina')
    await jil(['hq', 'user', 'add', 'vera', '--role', 'viewer', '--out', join(tmp.dir, 'vera.json')], env)
    const who = await jil(['hq', 'whoami', '--user', join(tmp.dir, 'vera.json'), '--json'], env)
    expect(who.json()).toMatchObject({name: 'vera', role: 'viewer'})
    const denied = await jil(['hq', 'operator', 'add', 'Acme', '--kyc', 'approved', '--user', join(tmp.dir, 'vera.json'), '--json'], env)
    expect(denied.code).toBe(1)
    expect(denied.json().error).toMatchObject({code: 'FORBIDDEN', permission: 'operators:manage'})
    const list = await jil(['hq', 'user', 'list'], env)
    expect(list.stdout).toMatch(/^USER\s+ROLE\s+STATUS/)
    expect(list.stdout).toMatch(/olga\s+ops-lead\s+active/)
    const renewed = await jil(['hq', 'user', 'renew', 'olga', '--user', join(tmp.dir, 'olga.json'), '--json'], env)
    expect(renewed.code, renewed.stderr).toBe(0)
    expect(renewed.json().bundle).toBe(join(tmp.dir, 'olga.json'))
    expect((await jil(['hq', 'whoami', '--user', join(tmp.dir, 'olga.json'), '--json'], env)).json().serial).toBe(renewed.json().serial)
  })

  it('joins a node with a token, refuses a wrong CA fingerprint before sending it, and revokes it for good', async () => {
    expect((await jil(['hq', 'operator', 'add', 'Helvetia Nodes AG', '--kyc', 'approved'], env)).code).toBe(0)
    const token = await jil(['hq', 'token', 'create', '--node-id', 'CH-ZUG-01', '--jurisdiction', 'CH/FINMA', '--operator', 'Helvetia Nodes AG', '--user', join(tmp.dir, 'olga.json'), '--json'], env)
    expect(token.code, token.stderr).toBe(0)
    expect(token.json()).toEqual({node_id: 'CH-ZUG-01', zone: 'CH/FINMA', operator: 'Helvetia Nodes AG', track: 'mainnet', token: expect.stringMatching(/^jil_join_/), expires_at: expect.any(String)})
    const state = join(tmp.dir, 'node')
    const init = await jil(['node', 'init', '--node-id', 'CH-ZUG-01', '--region', 'eu-zurich', '--jurisdiction', 'CH/FINMA', '--operator', 'Helvetia Nodes AG', '--state-dir', state, '--json'], env)
    expect(init.code, init.stderr).toBe(0)
    expect((await stat(join(state, 'node.key'))).mode & 0o777).toBe(0o600)

    const wrong = await jil(['node', 'join', '--token', token.json().token, '--ca-fingerprint', 'sha256:' + 'ab'.repeat(32), '--state-dir', state, '--json'], env)
    expect(wrong.code).toBe(1)
    expect(wrong.json().error.code).toBe('CA_FINGERPRINT_MISMATCH')

    const joined = await jil(['node', 'join', '--token', token.json().token, '--ca-fingerprint', fingerprint, '--state-dir', state, '--json'], env)
    expect(joined.code, joined.stderr).toBe(0)
    expect(joined.json()).toMatchObject({node_id: 'CH-ZUG-01', zone: 'CH/FINMA'})
    const status = await jil(['node', 'status', '--state-dir', state, '--json'], env)
    expect(status.json().hq).toMatchObject({accepted: true})
    const reuse = await jil(['node', 'join', '--token', token.json().token, '--ca-fingerprint', fingerprint, '--state-dir', join(tmp.dir, 'other'), '--json'], {...env, JIL_NODE_ID: 'CH-ZUG-01'})
    expect(reuse.code).toBe(1)

    const renew = await jil(['node', 'renew', '--state-dir', state, '--json'], env)
    expect(renew.code, renew.stderr).toBe(0)

    const viewerRevoke = await jil(['hq', 'revoke', 'CH-ZUG-01', '--reason', 'test', '--user', join(tmp.dir, 'vera.json'), '--json'], env)
    expect(viewerRevoke.json().error).toMatchObject({code: 'FORBIDDEN', permission: 'nodes:revoke'})
    const revoke = await jil(['hq', 'revoke', 'CH-ZUG-01', '--reason', 'key compromise', '--json'], env)
    expect(revoke.code, revoke.stderr).toBe(0)
    const after = await jil(['node', 'status', '--state-dir', state, '--json'], env)
    expect(after.json().hq).toMatchObject({accepted: false, code: 'CERT_REVOKED'})
    const renewAfter = await jil(['node', 'renew', '--state-dir', state, '--json'], env)
    expect(renewAfter.code).toBe(1)
    expect(renewAfter.json().error.code).toBe('CERT_REVOKED')
    const rejoin = await jil(['hq', 'token', 'create', '--node-id', 'CH-ZUG-01', '--jurisdiction', 'CH/FINMA', '--operator', 'Helvetia Nodes AG', '--json'], env)
    expect(rejoin.json().error.code).toBe('NODE_REVOKED')

    const ca = await jil(['hq', 'ca', 'export', '--crl', '--out', join(tmp.dir, 'pki'), '--json'], env)
    expect(ca.code, ca.stderr).toBe(0)
    expect(await readFile(join(tmp.dir, 'pki', 'crl.pem'), 'utf8')).toContain('BEGIN X509 CRL')
  })

  it('revokes a user at once', async () => {
    expect((await jil(['hq', 'user', 'revoke', 'vera', '--reason', 'left', '--json'], env)).code).toBe(0)
    const who = await jil(['hq', 'whoami', '--user', join(tmp.dir, 'vera.json'), '--json'], env)
    expect(who.json().error.code).toBe('CERT_REVOKED')
  })

  it('issues a break-glass admin offline while HQ is stopped, and refuses while it runs', async () => {
    const running = await jil(['hq', 'user', 'add', 'rescue', '--role', 'admin', '--data-dir', hqDir, '--out', join(tmp.dir, 'rescue.json'), '--json'], env)
    expect(running.json().error.code).toBe('DATA_DIR_LOCKED')
    serve.child.kill('SIGTERM')
    await serve.exited
    const offline = await jil(['hq', 'user', 'add', 'rescue', '--role', 'admin', '--data-dir', hqDir, '--out', join(tmp.dir, 'rescue.json'), '--json'], env)
    expect(offline.code, offline.stderr).toBe(0)
    serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    const who = await jil(['hq', 'whoami', '--user', join(tmp.dir, 'rescue.json'), '--hq', serve.ready.url, '--json'], env)
    expect(who.json()).toMatchObject({name: 'rescue', role: 'admin'})
    const log = await jil(['audit', 'log', '--action', 'user.add', '--hq', serve.ready.url, '--json'], env)
    expect(log.json().entries[0]).toMatchObject({subject: 'rescue', actor: {type: 'hq', id: 'break-glass'}})
  })
})
