import {mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterEach, beforeAll, describe, expect, it} from 'vitest'

import {applyConfigDocs, applyDesiredConfig, readAppliedConfig} from '../../src/node/config-files.js'
import {ManualClock} from '../../src/shared/clock.js'
import {configDocsProblem, configNameFromFile, configNameProblem, configSha256, configVersionOf, nulCharacterAt, type ConfigDoc} from '../../src/shared/config-docs.js'
import {JilError} from '../../src/shared/errors.js'
import type {TrustedKey} from '../../src/shared/manifest.js'
import {ed25519PublicPem, fileSigner, generateEd25519Key, type Signer} from '../../src/shared/signing.js'
import {signDocument, verifyDesiredState, type DesiredState, type DesiredStateCheck} from '../../src/shared/stack.js'

const doc = (name: string, content: unknown, o: Partial<ConfigDoc> = {}): ConfigDoc => ({name, scope: 'zone', version: 1, seq: 1, sha256: configSha256(content), content, ...o})

describe('config document names', () => {
  it('takes safe file names only', () => {
    for (const ok of ['fees', 'fees-ch', 'zone.params', 'a', '0', 'a_b-c.d', 'x'.repeat(64)]) expect(configNameProblem(ok), ok).toBeUndefined()
    for (const bad of ['', 'Fees', '.hidden', '-x', '_x', 'a..b', '../etc', 'a/b', 'a\\b', 'fees json', 'x'.repeat(65), 'é', 'a\u0000b', 'fees.json/']) {
      expect(configNameProblem(bad), JSON.stringify(bad)).toMatch(/config name|"\.\."/)
    }
    expect(configNameProblem(42)).toBe('the name is not a string')
  })

  it('names a document after its file: base name without extension, lower-cased; a bad one is a usage error', () => {
    expect(configNameFromFile('/tmp/x/Fees-CH.json')).toBe('fees-ch')
    expect(configNameFromFile('zone.params.json')).toBe('zone.params')
    expect(configNameFromFile('limits')).toBe('limits')
    let err: unknown
    try {
      configNameFromFile('/tmp/My Fees.json')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(JilError)
    expect(err).toMatchObject({code: 'CONFIG_NAME_INVALID', exit: 2})
  })

  it('hashes the canonical JSON (key order does not matter) and finds NUL characters', () => {
    expect(configSha256({b: 1, a: [true, null, 'x']})).toBe(configSha256({a: [true, null, 'x'], b: 1}))
    expect(configSha256({a: 1})).toMatch(/^[0-9a-f]{64}$/)
    expect(configSha256({a: 1})).not.toBe(configSha256({a: 2}))
    expect(nulCharacterAt({a: ['ok', 'b\u0000d']})).toBe('$.a[1]')
    expect(nulCharacterAt({'k\u0000': 1})).toBe('$ (a key)')
    expect(nulCharacterAt({a: 'fine', n: 3})).toBeUndefined()
    expect(configVersionOf([])).toBe(0)
    expect(configVersionOf([{seq: 4}, {seq: 9}, {seq: 2}])).toBe(9)
  })

  it('refuses a config list with a bad name, a duplicate, a wrong hash or a missing field', () => {
    expect(configDocsProblem([])).toBeUndefined()
    expect(configDocsProblem([doc('fees', {ch: 0.1}), doc('limits', [1, 2], {scope: 'node', seq: 4, version: 2})])).toBeUndefined()
    expect(configDocsProblem([doc('fees', null)])).toBeUndefined()
    expect(configDocsProblem({})).toBe('config is not a list of documents')
    expect(configDocsProblem([doc('../passwd', {})])).toMatch(/config\[0\]: .*not a config name/)
    expect(configDocsProblem([doc('fees', {}), doc('fees', {a: 1})])).toBe('config document fees is listed twice')
    expect(configDocsProblem([{...doc('fees', {a: 1}), content: {a: 2}}])).toBe('config document fees: its content does not match its sha256')
    expect(configDocsProblem([doc('fees', {}, {scope: 'track' as never})])).toMatch(/no valid scope/)
    expect(configDocsProblem([doc('fees', {}, {version: 0})])).toMatch(/no valid version/)
    expect(configDocsProblem([doc('fees', {}, {seq: 1.5})])).toMatch(/no valid seq/)
    expect(configDocsProblem([doc('fees', {}, {sha256: 'ABC'})])).toMatch(/no valid sha256/)
    const {content: _c, ...noContent} = doc('fees', {})
    expect(configDocsProblem([noContent])).toMatch(/has no content/)
    expect(configDocsProblem(['fees'])).toMatch(/is not a document/)
  })
})

describe('a desired state carrying config', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')
  let signer: Signer
  let keys: TrustedKey[]
  const check = (): DesiredStateCheck => ({keys, nodeId: 'CH-ZUG-01', track: 'mainnet', zone: 'CH/FINMA', now: clock.now(), lastSequence: 1, running: new Map(), caPem: '', isRevoked: () => false})
  const signed = (config: unknown): Promise<DesiredState> =>
    signDocument(
      {
        kind: 'jil.desired-state/v1',
        node_id: 'CH-ZUG-01',
        zone: 'CH/FINMA',
        track: 'mainnet',
        sequence: 2,
        issued_at: clock.now().toISOString(),
        expires_at: new Date(clock.now().getTime() + 3_600_000).toISOString(),
        run_mode: 'running',
        config_version: 3,
        stack_version: 1,
        services: [],
        unresolved: [],
        ...(config === undefined ? {} : {config: config as ConfigDoc[]}),
      },
      signer,
    )

  beforeAll(async () => {
    signer = await fileSigner((await generateEd25519Key()).privatePem)
    keys = [{key_id: signer.keyId, public_key: ed25519PublicPem(signer.publicKey)}]
  })

  it('is accepted with valid documents, and without any (an older HQ)', async () => {
    expect(verifyDesiredState(await signed([doc('fees', {ch: 0.1}, {seq: 3})]), check())).toEqual({ok: true, refused: []})
    expect(verifyDesiredState(await signed(undefined), check())).toEqual({ok: true, refused: []})
  })

  it('is refused (DS_MALFORMED) with an unsafe name, a duplicate or a hash that does not hold, even when HQ signed it', async () => {
    for (const [config, message] of [
      [[doc('../../etc/cron.d/x', {})], /not a config name/],
      [[doc('fees', {}), doc('fees', {})], /listed twice/],
      [[{...doc('fees', {rate: 1}), content: {rate: 2}}], /does not match its sha256/],
      ['fees', /not a list/],
    ] as const) {
      const r = verifyDesiredState(await signed(config), check())
      expect(r).toMatchObject({ok: false, code: 'DS_MALFORMED', message: expect.stringMatching(message)})
    }
  })

  it('checks the signature first: altered config is a bad signature', async () => {
    const d = await signed([doc('fees', {rate: 1}, {seq: 3})])
    const altered = {...d, config: [doc('fees', {rate: 9}, {seq: 3})]}
    expect(verifyDesiredState(altered, check())).toMatchObject({ok: false, code: 'DS_BAD_SIGNATURE'})
  })
})

describe('the node writes its config dir', () => {
  let dir: string
  afterEach(async () => {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('writes each document as its canonical JSON (sha256 of the file = the document\'s), only when it differs, and removes only what it wrote', async () => {
    dir = await mkdtemp(join(tmpdir(), 'jil-config-'))
    const cfg = join(dir, 'config')
    const fees = doc('fees', {ch: {rate: 0.1, cap: 500}}, {seq: 3})
    const limits = doc('limits', [1, 2, 3], {scope: 'node', seq: 5})
    const first = await applyConfigDocs(dir, 5, [fees, limits])
    expect(first).toEqual({ok: true, config_version: 5, previous_version: 0, written: ['fees', 'limits'], removed: [], unchanged: []})
    expect((await stat(cfg)).mode & 0o777).toBe(0o750)
    expect((await stat(join(cfg, 'fees.json'))).mode & 0o777).toBe(0o644)
    expect(await readFile(join(cfg, 'fees.json'), 'utf8')).toBe('{"ch":{"cap":500,"rate":0.1}}')
    expect(configSha256(JSON.parse(await readFile(join(cfg, 'limits.json'), 'utf8')))).toBe(limits.sha256)
    expect(await readAppliedConfig(dir)).toEqual({config_version: 5, docs: [{name: 'fees', seq: 3, version: 1, sha256: fees.sha256}, {name: 'limits', seq: 5, version: 1, sha256: limits.sha256}]})

    // The operator's own file beside jil's is never touched; an unchanged document is not rewritten.
    await writeFile(join(cfg, 'local.json'), '{"mine": true}')
    const feesIno = (await stat(join(cfg, 'fees.json'))).ino
    const fees2 = doc('fees', {ch: {rate: 0.2, cap: 500}}, {seq: 8, version: 2})
    const second = await applyConfigDocs(dir, 8, [fees2])
    expect(second).toEqual({ok: true, config_version: 8, previous_version: 5, written: ['fees'], removed: ['limits'], unchanged: []})
    expect((await stat(join(cfg, 'fees.json'))).ino).not.toBe(feesIno) // replaced by rename, never rewritten in place
    expect((await readdir(cfg)).sort()).toEqual(['.applied.json', 'fees.json', 'local.json'])

    const third = await applyConfigDocs(dir, 8, [fees2])
    expect(third).toEqual({ok: true, config_version: 8, previous_version: 8, written: [], removed: [], unchanged: ['fees']})

    // A hand-edited file of jil's is put back.
    await writeFile(join(cfg, 'fees.json'), '{"ch": "edited"}')
    expect((await applyConfigDocs(dir, 8, [fees2])).written).toEqual(['fees'])
    expect(configSha256(JSON.parse(await readFile(join(cfg, 'fees.json'), 'utf8')))).toBe(fees2.sha256)

    // An empty config removes jil's files and keeps the operator's.
    expect(await applyConfigDocs(dir, 0, [])).toMatchObject({removed: ['fees'], config_version: 0})
    expect((await readdir(cfg)).sort()).toEqual(['.applied.json', 'local.json'])
  })

  it('a record naming paths outside the config dir removes nothing there', async () => {
    dir = await mkdtemp(join(tmpdir(), 'jil-config-'))
    await mkdir(join(dir, 'config'), {recursive: true})
    await writeFile(join(dir, 'precious.json'), '{}')
    await writeFile(join(dir, 'config', '.applied.json'), JSON.stringify({config_version: 1, docs: [{name: '../precious', seq: 1, version: 1, sha256: 'x'}]}))
    expect(await applyConfigDocs(dir, 0, [])).toMatchObject({ok: true, removed: []})
    expect(await readFile(join(dir, 'precious.json'), 'utf8')).toBe('{}')
  })

  it('a document it cannot write is a result (ok: false), and the record keeps the previous version', async () => {
    dir = await mkdtemp(join(tmpdir(), 'jil-config-'))
    await applyConfigDocs(dir, 2, [doc('fees', {a: 1}, {seq: 2})])
    // Something that is not jil's file stands where limits.json would go: the rename onto it fails.
    await mkdir(join(dir, 'config', 'limits.json', 'inside'), {recursive: true})
    const r = await applyDesiredConfig(dir, 4, [doc('fees', {a: 1}, {seq: 2}), doc('limits', {a: 2}, {seq: 4})])
    expect(r).toMatchObject({ok: false, config_version: 4, previous_version: 2, error: {code: 'FILE_UNWRITABLE'}})
    expect((await readAppliedConfig(dir))?.config_version).toBe(2)
    expect((await stat(join(dir, 'config', 'limits.json', 'inside'))).isDirectory()).toBe(true)
  })
})
