import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

const IMAGE = process.env.JIL_TEST_IMAGE
const DIGEST = process.env.JIL_TEST_IMAGE_DIGEST

describe.runIf(IMAGE)('releases through the CLI', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let env: NodeJS.ProcessEnv
  const as = (who: string) => ['--user', join(tmp.dir, `${who}.json`)]

  beforeAll(async () => {
    tmp = await tempDir('jil-rel-sys-')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: ''}
    expect((await jil(['hq', 'init', '--data-dir', join(tmp.dir, 'hq')], env)).code).toBe(0)
    serve = await jilServe(['hq', 'serve', '--data-dir', join(tmp.dir, 'hq'), '--listen', '127.0.0.1:0', '--json'], env)
    env.JIL_HQ_URL = serve.ready.url
    for (const [name, role] of [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['otto', 'ops-lead'], ['sam', 'security-lead']]) {
      expect((await jil(['hq', 'user', 'add', name!, '--role', role!, '--out', join(tmp.dir, `${name}.json`)], env)).code).toBe(0)
    }
  })
  afterAll(async () => {
    serve?.child.kill('SIGTERM')
    await serve?.exited
    await tmp?.cleanup()
  })

  it('signs, approves and promotes to mainnet; lists images; shows keys and the registry config', async () => {
    const signed = await jil(['hq', 'sign', IMAGE!, '--version', 'v95.3', '--commit', '9f2c1e0', ...as('ci'), '--json'], env)
    expect(signed.code, signed.stderr).toBe(0)
    expect(signed.json()).toMatchObject({digest: DIGEST, track: 'devnet'})
    const ref = `${IMAGE!.replace(/:[^:/]+$/, '')}@${DIGEST}`
    expect((await jil(['hq', 'approve', ref, '--track', 'testnet', ...as('ci'), '--json'], env)).json().error.code).toBe('FORBIDDEN')
    expect((await jil(['hq', 'approve', ref, '--track', 'testnet', ...as('olga')], env)).code).toBe(0)
    expect((await jil(['hq', 'promote', ref, '--to', 'testnet', ...as('olga')], env)).code).toBe(0)
    expect((await jil(['hq', 'promote', ref, '--to', 'mainnet', ...as('olga'), '--json'], env)).json().error.code).toBe('INSUFFICIENT_APPROVALS')
    for (const who of ['olga', 'sam']) expect((await jil(['hq', 'approve', ref, '--track', 'mainnet', ...as(who)], env)).code).toBe(0)
    const main = await jil(['hq', 'promote', ref, '--to', 'mainnet', ...as('sam'), '--json'], env)
    expect(main.code, main.stderr).toBe(0)
    expect(main.json()).toMatchObject({track: 'mainnet', digest: DIGEST})
    const images = await jil(['hq', 'images', '--track', 'mainnet'], env)
    expect(images.stdout).toMatch(/^IMAGE\s+VERSION\s+DIGEST\s+TRACK\s+APPROVALS/)
    expect(images.stdout).toMatch(/jil\/busybox\s+v95\.3\s+sha256:\S+\s+mainnet\s+2/)
    expect((await jil(['hq', 'promote', 'not-a-ref', '--to', 'mainnet', '--json'], env)).code).toBe(2)
    const keys = await jil(['hq', 'keys', 'list', '--json'], env)
    expect(keys.json().keys).toHaveLength(1)
    const reg = await jil(['hq', 'registry', 'config', '--json'], env)
    expect(reg.json().config).toContain(`realm: ${serve.ready.url}/v1/registry/token`)
    expect(reg.json().rootcertbundle).toContain('BEGIN CERTIFICATE')
  })
})
