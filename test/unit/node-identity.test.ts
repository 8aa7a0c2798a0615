import 'reflect-metadata'

import {execFileSync} from 'node:child_process'
import {webcrypto, X509Certificate} from 'node:crypto'
import {copyFile, mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {createServer, type Server} from 'node:https'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {TLSSocket} from 'node:tls'

import * as x509 from '@peculiar/x509'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa} from '../../src/hq/ca/ca.js'
import {
  defaultStateDir,
  formatNodeEnv,
  parseEnvFile,
  parseFingerprint,
  parseNodeId,
  parseZone,
  readNodeEnv,
  resolveStateDir,
} from '../../src/node/config.js'
import {createNodeCsr, generateNodeKey, importNodeKey} from '../../src/node/csr.js'
import {hardwareReport, type HardwareReport} from '../../src/node/hardware.js'
import {initNode, joinNode, loadNodeIdentity, nodeStatus, renewalDue, renewalTime, renewNode} from '../../src/node/identity.js'
import {ManualClock, systemClock} from '../../src/shared/clock.js'
import {certInfo} from '../../src/shared/pki.js'
import {generateEd25519Key} from '../../src/shared/signing.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const DAY = 86_400_000
const HARDWARE: HardwareReport = {machine_id: '0123456789abcdef0123456789abcdef', cpu_cores: 4, memory_bytes: 8 * 2 ** 30, disk_bytes: 100 * 2 ** 30}

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jil-node-'))
})
afterEach(async () => {
  await rm(dir, {recursive: true, force: true})
})

const mode = async (p: string) => (await stat(p)).mode & 0o777

const init = (over: Partial<Parameters<typeof initNode>[0]> = {}) =>
  initNode({stateDir: dir, nodeId: 'CH-ZUG-01', region: 'ch-zug', jurisdiction: 'CH/FINMA', operator: 'Acme & Sons Nodes', ...over})

describe('the node state dir', () => {
  it('defaults to /var/lib/jil for root and the XDG state dir otherwise; JIL_STATE_DIR and --state-dir win', () => {
    expect(defaultStateDir({}, 0)).toBe('/var/lib/jil')
    expect(defaultStateDir({XDG_STATE_HOME: '/home/u/.state'}, 1000)).toBe('/home/u/.state/jil')
    expect(defaultStateDir({XDG_STATE_HOME: 'relative'}, 1000)).toMatch(/\/\.local\/state\/jil$/)
    expect(resolveStateDir(undefined, {JIL_STATE_DIR: '/srv/jil'})).toBe('/srv/jil')
    expect(resolveStateDir('/opt/n1', {JIL_STATE_DIR: '/srv/jil'})).toBe('/opt/n1')
    expect(() => resolveStateDir('  ', {})).toThrow(expect.objectContaining({code: 'STATE_DIR_INVALID', exit: 2}))
  })

  it('validates node ids, zones and fingerprints, and says how to fix them', () => {
    expect(parseNodeId('CH-ZUG-01')).toBe('CH-ZUG-01')
    expect(parseNodeId('AE-ADGM-01')).toBe('AE-ADGM-01')
    expect(() => parseNodeId('ch-zug-01')).toThrow(expect.objectContaining({code: 'NODE_ID_INVALID', exit: 2, hint: 'node ids are upper case: --node-id CH-ZUG-01'}))
    for (const bad of ['CHZUG01', 'CH-ZUG-1', 'CH-ZUG-0001', 'CHE-ZUG-01', 'CH-Z-01', 'ROGUE-01', '']) {
      expect(() => parseNodeId(bad), bad).toThrow(expect.objectContaining({code: 'NODE_ID_INVALID'}))
    }
    expect(parseZone('CH/FINMA')).toBe('CH/FINMA')
    // Only the shape: HQ's zones table decides which zones exist (ZONE_UNKNOWN at join).
    expect(parseZone('XX/NOBODY')).toBe('XX/NOBODY')
    expect(() => parseZone('CH_FINMA')).toThrow(expect.objectContaining({code: 'ZONE_INVALID', exit: 2, hint: 'write the zone as COUNTRY/REGULATOR: --jurisdiction CH/FINMA'}))
    for (const bad of ['ch/finma', 'CH', 'CHE/FINMA', 'CH/', 'CH/FIN MA']) expect(() => parseZone(bad), bad).toThrow(expect.objectContaining({code: 'ZONE_INVALID'}))
    const hex = 'ab'.repeat(32)
    expect(parseFingerprint(`sha256:${hex}`)).toBe(`sha256:${hex}`)
    expect(parseFingerprint(`SHA256:${hex.toUpperCase().replace(/(..)(?!$)/g, '$1:')}`)).toBe(`sha256:${hex}`)
    expect(() => parseFingerprint('sha256:abc')).toThrow(expect.objectContaining({code: 'CA_FINGERPRINT_INVALID', exit: 2}))
  })

  it('writes node.env that sh reads back to the same values', async () => {
    const env = {JIL_NODE_ID: 'CH-ZUG-01', JIL_REGION: 'ch-zug', JIL_JURISDICTION: 'CH/FINMA', REDPANDA_SEEDS: 'rp1:9092,rp2:9092', JIL_OPERATOR: 'Acme & "Sons" $HOME `x`'}
    const text = formatNodeEnv(env)
    expect(parseEnvFile(text)).toEqual(env)
    const p = join(dir, 'node.env')
    await writeFile(p, text)
    const out = execFileSync('sh', ['-c', '. "$1"; printf "%s\\n%s" "$JIL_OPERATOR" "$JIL_JURISDICTION"', 'sh', p], {encoding: 'utf8', env: {PATH: process.env.PATH}})
    expect(out).toBe(`${env.JIL_OPERATOR}\nCH/FINMA`)
  })
})

describe('jil node init', () => {
  it('writes node.env and a 0600 P-256 key', async () => {
    const r = await init({hqUrl: 'https://hq.example.com:8443/', redpandaSeeds: 'rp1:9092, rp2:9092'})
    expect(r).toMatchObject({action: 'created', node_id: 'CH-ZUG-01', jurisdiction: 'CH/FINMA', hq_url: 'https://hq.example.com:8443', redpanda_seeds: 'rp1:9092,rp2:9092'})
    expect(await readNodeEnv(dir)).toEqual({
      JIL_NODE_ID: 'CH-ZUG-01',
      JIL_REGION: 'ch-zug',
      JIL_JURISDICTION: 'CH/FINMA',
      REDPANDA_SEEDS: 'rp1:9092,rp2:9092',
      JIL_HQ_URL: 'https://hq.example.com:8443',
      JIL_OPERATOR: 'Acme & Sons Nodes',
    })
    expect(await mode(r.key_file)).toBe(0o600)
    expect(await mode(r.env_file)).toBe(0o644)
    const keys = await importNodeKey(await readFile(r.key_file, 'utf8'))
    expect(keys.publicKey.algorithm).toMatchObject({name: 'ECDSA', namedCurve: 'P-256'})
  })

  it('is idempotent with the same values, refuses other values without --force, and --force makes a new key', async () => {
    const first = await init()
    const key = await readFile(first.key_file, 'utf8')
    expect((await init()).action).toBe('unchanged')
    expect(await readFile(first.key_file, 'utf8')).toBe(key)

    await expect(init({nodeId: 'CH-ZUG-02'})).rejects.toMatchObject({code: 'NODE_EXISTS', exit: 1, details: {differs: ['JIL_NODE_ID']}})
    await expect(init({region: 'ch-bern'})).rejects.toMatchObject({code: 'NODE_EXISTS'})
    expect(await readFile(first.key_file, 'utf8')).toBe(key)
    expect((await readNodeEnv(dir)).JIL_NODE_ID).toBe('CH-ZUG-01')

    const replaced = await init({nodeId: 'CH-ZUG-02', force: true})
    expect(replaced.action).toBe('replaced')
    expect(await readFile(first.key_file, 'utf8')).not.toBe(key)
    expect((await readNodeEnv(dir)).JIL_NODE_ID).toBe('CH-ZUG-02')
  })

  it('refuses a bad node id or zone before writing anything', async () => {
    await expect(init({nodeId: 'zug-1'})).rejects.toMatchObject({code: 'NODE_ID_INVALID', exit: 2})
    await expect(init({jurisdiction: 'CH-FINMA'})).rejects.toMatchObject({code: 'ZONE_INVALID', exit: 2})
    await expect(init({hqUrl: 'http://hq:8443'})).rejects.toMatchObject({code: 'HQ_URL_INVALID', exit: 2})
    await expect(readNodeEnv(dir)).rejects.toMatchObject({code: 'NODE_NOT_INITIALIZED'})
  })

  it('join needs an HQ URL and an operator from the flags or node.env, and a fingerprint of the right shape', async () => {
    await init({operator: undefined})
    const o = {stateDir: dir, token: 'jil_join_0123456789', caFingerprint: `sha256:${'0'.repeat(64)}`, clock: systemClock, hardware: HARDWARE}
    await expect(joinNode(o)).rejects.toMatchObject({code: 'HQ_URL_MISSING', exit: 2})
    await expect(joinNode({...o, hqUrl: 'https://127.0.0.1:1'})).rejects.toMatchObject({code: 'OPERATOR_MISSING', exit: 2})
    await expect(joinNode({...o, hqUrl: 'https://127.0.0.1:1', operator: 'Acme', caFingerprint: 'md5:00'})).rejects.toMatchObject({code: 'CA_FINGERPRINT_INVALID', exit: 2})
    await expect(joinNode({...o, hqUrl: 'https://127.0.0.1:1', operator: 'Acme'})).rejects.toMatchObject({code: 'HQ_UNREACHABLE', exit: 1})
  })

  it('never lets two processes change the identity at once, and takes over a dead one\'s lock', async () => {
    await init()
    await writeFile(join(dir, 'node.lock'), JSON.stringify({pid: process.pid, holder: 'jil node renew'}))
    await expect(init({force: true})).rejects.toMatchObject({code: 'STATE_DIR_BUSY', message: expect.stringContaining('jil node renew')})
    // A pid that cannot be alive (above Linux's pid_max).
    await writeFile(join(dir, 'node.lock'), JSON.stringify({pid: 2 ** 22 + 1, holder: 'jil node renew'}))
    expect((await init({force: true})).action).toBe('replaced')
    await expect(stat(join(dir, 'node.lock'))).rejects.toMatchObject({code: 'ENOENT'})
  })

  it('status and renew of a node that never joined say which step is missing', async () => {
    await expect(nodeStatus({stateDir: dir, clock: systemClock})).rejects.toMatchObject({code: 'NODE_NOT_INITIALIZED'})
    await init()
    await expect(nodeStatus({stateDir: dir, clock: systemClock})).rejects.toMatchObject({code: 'NODE_NOT_JOINED'})
    await expect(renewNode({stateDir: dir, clock: systemClock})).rejects.toMatchObject({code: 'NODE_NOT_JOINED'})
  })
})

describe('the node key and CSR', () => {
  it('makes a CSR with CN = node id and SAN URI jil://node/<id>, signed by the node key', async () => {
    const {keys, keyPem} = await generateNodeKey()
    const pem = await createNodeCsr('CH-ZUG-01', keys)
    const csr = new x509.Pkcs10CertificateRequest(pem)
    expect(await csr.verify()).toBe(true)
    expect(csr.subject).toBe('CN=CH-ZUG-01')
    const ext = csr.getExtension('2.5.29.17') // subjectAltName
    expect(ext).toBeDefined()
    expect(new x509.SubjectAlternativeNameExtension(ext!.rawData).names.toJSON()).toEqual([{type: 'url', value: 'jil://node/CH-ZUG-01'}])

    // The key file alone is enough to sign again: the public half is derived from it.
    const again = new x509.Pkcs10CertificateRequest(await createNodeCsr('CH-ZUG-01', await importNodeKey(keyPem)))
    expect(await again.verify()).toBe(true)
    expect(Buffer.from(again.publicKey.rawData).equals(Buffer.from(csr.publicKey.rawData))).toBe(true)
    await expect(importNodeKey('not a key')).rejects.toMatchObject({code: 'KEY_INVALID'})
  })
})

describe('renewal time', () => {
  it('is due at 2/3 of the lifetime', () => {
    const cert = {notBefore: new Date('2026-01-01T00:00:00Z'), notAfter: new Date('2026-01-31T00:00:00Z')}
    expect(renewalTime(cert).toISOString()).toBe('2026-01-21T00:00:00.000Z')
    expect(renewalDue(cert, new Date('2026-01-20T23:59:59Z'))).toBe(false)
    expect(renewalDue(cert, new Date('2026-01-21T00:00:00Z'))).toBe(true)
    expect(renewalDue(cert, new Date('2026-02-05T00:00:00Z'))).toBe(true)
  })
})

describe('the hardware report', () => {
  it('reports this machine with sane values', async () => {
    const hw = await hardwareReport({stateDir: join(dir, 'not', 'yet')})
    expect(hw.machine_id).toMatch(/^[0-9a-f]{32}$|^[0-9a-f-]{36}$/)
    if (hw.system_uuid !== undefined) expect(hw.system_uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
    expect(Number.isInteger(hw.cpu_cores) && hw.cpu_cores >= 1 && hw.cpu_cores <= 4096).toBe(true)
    expect(hw.memory_bytes).toBeGreaterThan(2 ** 27)
    expect(hw.disk_bytes).toBeGreaterThan(2 ** 27)
    expect(typeof hw.hostname).toBe('string')
  })
})

/**
 * A stand-in for HQ's node routes, on real TLS: it serves GET /v1/ca, signs CSRs the way the wire
 * contract describes and records every request. The end-to-end tests run against the real HQ.
 */
type StandIn = {url: string; caPem: string; fingerprint: string; requests: {method: string; url: string; body: string}[]; revoked: Set<string>; close(): Promise<void>}

async function startStandIn(): Promise<StandIn> {
  const pair = await createCa(systemClock)
  const ca = await CertificateAuthority.load(pair, systemClock)
  const server = await ca.issueServer(['127.0.0.1'])
  const caCert = new x509.X509Certificate(pair.certPem)
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decode(pair.keyPem)[0]!, {name: 'ECDSA', namedCurve: 'P-256'}, false, ['sign'])
  const signing = await generateEd25519Key()
  const requests: StandIn['requests'] = []
  const revoked = new Set<string>()

  const issue = async (csrPem: string) => {
    const csr = new x509.Pkcs10CertificateRequest(csrPem)
    if (!(await csr.verify())) throw new Error('bad csr')
    const id = csr.subject.replace(/^CN=/, '')
    const now = Date.now()
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^./, '1'),
      subject: [{CN: [id]}, {O: ['CH/FINMA']}],
      issuer: caCert.subject,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 30 * DAY),
      signingAlgorithm: {name: 'ECDSA', hash: 'SHA-256'},
      publicKey: csr.publicKey,
      signingKey: caKey as unknown as CryptoKey,
      extensions: [
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{type: 'url', value: `jil://node/${id}`}]),
      ],
    })
    return {pem: cert.toString('pem') + '\n', id, notAfter: cert.notAfter.toISOString()}
  }
  const problem = (status: number, code: string) => ({status, type: 'application/problem+json', body: JSON.stringify({type: 'about:blank', title: code, status, code, detail: `refused: ${code}`})})

  const srv: Server = createServer({cert: server.pem, key: server.keyPem, ca: pair.certPem, requestCert: true, rejectUnauthorized: false}, (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      requests.push({method: req.method ?? '', url: req.url ?? '', body})
      const sock = req.socket as TLSSocket
      const peer = sock.authorized ? sock.getPeerCertificate() : undefined
      const serial = peer?.serialNumber?.toLowerCase().replace(/^0+/, '')
      const route = async (): Promise<{status: number; type: string; body: string}> => {
        if (req.method === 'GET' && req.url === '/v1/ca') return {status: 200, type: 'application/x-pem-file', body: pair.certPem}
        if (req.method === 'POST' && req.url === '/v1/node/join') {
          const b = JSON.parse(body) as {token: string; csr: string}
          if (b.token !== 'good-token') return problem(401, 'TOKEN_INVALID')
          const c = await issue(b.csr)
          const answer = {node_id: c.id, zone: 'CH/FINMA', track: 'mainnet', operator: 'Acme & Sons Nodes', cert: c.pem, ca: pair.certPem, ca_fingerprint: pair.fingerprint, signing_keys: [{key_id: signing.keyId, public_key: signing.publicPem}], not_after: c.notAfter}
          return {status: 200, type: 'application/json', body: JSON.stringify(answer)}
        }
        if (!peer || !serial) return problem(401, 'CLIENT_CERT_REQUIRED')
        if (revoked.has(serial)) return problem(401, 'CERT_REVOKED')
        if (req.method === 'POST' && req.url === '/v1/nodes/renew') {
          const c = await issue((JSON.parse(body) as {csr: string}).csr)
          return {status: 200, type: 'application/json', body: JSON.stringify({cert: c.pem, not_after: c.notAfter})}
        }
        if (req.method === 'GET' && req.url === '/v1/whoami') {
          return {status: 200, type: 'application/json', body: JSON.stringify({kind: 'node', name: peer.subject.CN, zone: 'CH/FINMA', serial, not_after: new Date(peer.valid_to).toISOString()})}
        }
        return problem(404, 'NOT_FOUND')
      }
      route().then(
        (r) => res.writeHead(r.status, {'content-type': r.type}).end(r.body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      )
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  return {
    url: `https://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    caPem: pair.certPem,
    fingerprint: pair.fingerprint,
    requests,
    revoked,
    close: () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections()
        srv.close(() => resolve())
      }),
  }
}

describe('jil node join, renew and status against HQ over TLS', () => {
  let hq: StandIn
  beforeAll(async () => {
    hq = await startStandIn()
  })
  afterAll(async () => hq.close())
  beforeEach(() => {
    hq.requests.length = 0
    hq.revoked.clear()
  })

  const joinHq = (over: Partial<Parameters<typeof joinNode>[0]> = {}) =>
    joinNode({stateDir: dir, hqUrl: hq.url, token: 'good-token', caFingerprint: hq.fingerprint, clock: new ManualClock('2026-11-27T12:00:00Z'), hardware: HARDWARE, ...over})

  it('refuses a CA that does not match the pinned fingerprint before sending anything else', async () => {
    await init()
    const other = await createCa(systemClock)
    await expect(joinHq({caFingerprint: other.fingerprint})).rejects.toMatchObject({
      code: 'CA_FINGERPRINT_MISMATCH',
      exit: 1,
      details: {expected: other.fingerprint, actual: hq.fingerprint},
    })
    expect(hq.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/ca'])
    expect(hq.requests.some((r) => r.method === 'POST' || r.body.includes('good-token'))).toBe(false)
    await expect(loadNodeIdentity(dir)).rejects.toMatchObject({code: 'NODE_NOT_JOINED'})
  })

  it('keeps HQ\'s refusal code, adds the next step, and stores nothing', async () => {
    await init()
    await expect(joinHq({token: 'spent'})).rejects.toMatchObject({code: 'TOKEN_INVALID', hint: expect.stringContaining('jil hq token create --node-id CH-ZUG-01')})
    expect(hq.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/ca', 'POST /v1/node/join'])
    await expect(loadNodeIdentity(dir)).rejects.toMatchObject({code: 'NODE_NOT_JOINED'})
  })

  it('joins, stores the certificate, CA and signing keys, renews, and reports HQ\'s verdict', async () => {
    await init()
    const keyBefore = await readFile(join(dir, 'node.key'), 'utf8')
    const joined = await joinHq({hardware: undefined}) // measures this machine
    expect(joined).toMatchObject({node_id: 'CH-ZUG-01', zone: 'CH/FINMA', track: 'mainnet', hq_url: hq.url, ca_fingerprint: hq.fingerprint, rejoined: false, warnings: []})
    const sent = JSON.parse(hq.requests.find((r) => r.url === '/v1/node/join')!.body) as Record<string, unknown>
    expect(Object.keys(sent).sort()).toEqual(['csr', 'hardware', 'operator', 'token'])
    expect(sent).toMatchObject({token: 'good-token', operator: 'Acme & Sons Nodes', hardware: joined.hardware})
    expect(sent.csr).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----/)

    expect(await mode(join(dir, 'node.key'))).toBe(0o600)
    for (const f of ['node.crt', 'ca.crt', 'signing-keys.json', 'identity.json']) expect(await mode(join(dir, f)), f).toBe(0o644)
    expect(await readFile(join(dir, 'node.key'), 'utf8')).toBe(keyBefore) // the key never changed hands
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).toBe(hq.caPem)
    expect(JSON.parse(await readFile(join(dir, 'identity.json'), 'utf8'))).toEqual({
      node_id: 'CH-ZUG-01',
      zone: 'CH/FINMA',
      track: 'mainnet',
      operator: 'Acme & Sons Nodes',
      hq_url: hq.url,
      ca_fingerprint: hq.fingerprint,
      joined_at: '2026-11-27T12:00:00.000Z',
    })
    const id = await loadNodeIdentity(dir)
    expect(new X509Certificate(id.certPem).checkIssued(new X509Certificate(hq.caPem))).toBe(true)

    const status = await nodeStatus({stateDir: dir, clock: systemClock})
    expect(status).toMatchObject({node_id: 'CH-ZUG-01', region: 'ch-zug', cert: {serial: joined.serial, renewal_due: false, expired: false}, hq: {accepted: true, serial: joined.serial}})

    // Not due yet: --if-due leaves it alone; 21 days on, it renews.
    expect(await renewNode({stateDir: dir, clock: systemClock, ifDue: true})).toMatchObject({renewed: false, serial: joined.serial})
    const later = new ManualClock(Date.now() + 21 * DAY)
    const renewed = await renewNode({stateDir: dir, clock: later, ifDue: true})
    expect(renewed).toMatchObject({renewed: true, previous_serial: joined.serial})
    expect(renewed.serial).not.toBe(joined.serial)
    expect(await readFile(join(dir, 'node.key'), 'utf8')).not.toBe(keyBefore)
    expect(await mode(join(dir, 'node.key'))).toBe(0o600)
    const after = await loadNodeIdentity(dir)
    expect(after.cert.serial).toBe(renewed.serial)
    expect(new X509Certificate(after.certPem).checkPrivateKey((await import('node:crypto')).createPrivateKey(after.keyPem))).toBe(true)
    expect((await nodeStatus({stateDir: dir, clock: systemClock})).hq).toEqual({accepted: true, serial: renewed.serial, not_after: expect.any(String)})

    // Revoked: status reports it, renewal is refused and leaves the identity as it was.
    hq.revoked.add(renewed.serial)
    expect((await nodeStatus({stateDir: dir, clock: systemClock})).hq).toMatchObject({accepted: false, code: 'CERT_REVOKED'})
    await expect(renewNode({stateDir: dir, clock: systemClock})).rejects.toMatchObject({code: 'CERT_REVOKED', hint: expect.stringContaining('can never renew or rejoin')})
    expect((await loadNodeIdentity(dir)).cert.serial).toBe(renewed.serial)
    expect((await loadNodeIdentity(dir)).keyPem).toBe(after.keyPem)
  })

  it('finishes or discards a key/cert swap a crash interrupted', async () => {
    await init()
    await joinHq()
    const before = await loadNodeIdentity(dir)

    // Crash before the commit point: the staged pair is discarded, the old one stays.
    await writeFile(join(dir, 'node.key.next'), 'staged', {mode: 0o600})
    await writeFile(join(dir, 'node.crt.next'), 'staged')
    expect((await nodeStatus({stateDir: dir, clock: systemClock})).hq).toMatchObject({accepted: true, serial: before.cert.serial})
    await expect(stat(join(dir, 'node.key.next'))).rejects.toMatchObject({code: 'ENOENT'})
    await expect(stat(join(dir, 'node.crt.next'))).rejects.toMatchObject({code: 'ENOENT'})

    // Crash after it (new key in place, new cert still staged): the cert is moved into place.
    await copyFile(join(dir, 'node.crt'), join(dir, 'old.crt'))
    const renewed = await renewNode({stateDir: dir, clock: systemClock})
    await copyFile(join(dir, 'node.crt'), join(dir, 'node.crt.next'))
    await copyFile(join(dir, 'old.crt'), join(dir, 'node.crt'))
    expect((await nodeStatus({stateDir: dir, clock: systemClock})).hq).toMatchObject({accepted: true, serial: renewed.serial})
    expect(certInfo(await readFile(join(dir, 'node.crt'), 'utf8')).serial).toBe(renewed.serial)
  })
})
