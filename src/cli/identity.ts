import {constants} from 'node:fs'
import {access, mkdir} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {writeBundle, type UserBundle} from '../shared/bundle.js'
import {newKeyAndCsr} from '../shared/csr.js'
import {JilError, systemCode} from '../shared/errors.js'
import {exists, writeFileAtomic} from '../shared/files.js'
import type {HqClient} from '../shared/hq-client.js'
import {identityUri, type Role} from '../shared/pki.js'

type IssuedUser = {name: string; role: Role; cert: string; serial: string; not_after: string; ca: string; ca_fingerprint: string}

export type UserBundleResult = {name: string; role: Role; serial: string; not_after: string; bundle: string}

/** Before anything is issued: the bundle's path must be new and its directory writable (no cert without its file). */
async function refuseExisting(path: string): Promise<void> {
  if (await exists(path)) throw new JilError('FILE_EXISTS', `${path} already exists`, {hint: 'pass another --out; a bundle is never overwritten'})
  try {
    await mkdir(dirname(path), {recursive: true, mode: 0o700})
    await access(dirname(path), constants.W_OK)
  } catch (err) {
    throw new JilError('FILE_UNWRITABLE', `cannot write a bundle in ${dirname(path)}: ${systemCode(err) ?? String(err)}`, {hint: 'pass --out in a directory you can write to'})
  }
}

/** Makes the user's key here, sends only a CSR, and writes the bundle (0600) with what HQ issued. */
export async function addUserOnline(client: HqClient, me: UserBundle, name: string, role: string, out: string | undefined): Promise<UserBundleResult> {
  const path = out ?? join(process.cwd(), `${name}.bundle.json`)
  await refuseExisting(path)
  const {keyPem, csrPem} = await newKeyAndCsr(name, identityUri({kind: 'user', name}))
  const r = await client.request<IssuedUser>('POST', '/v1/users', {name, role, csr: csrPem})
  await writeBundle(path, bundleOf(r, keyPem, client.baseUrl, me.checkpoint_key))
  return {name: r.name, role: r.role, serial: r.serial, not_after: r.not_after, bundle: path}
}

/** Renews a user's certificate with a new key; the bundle is replaced atomically (yours by default). */
export async function renewUserOnline(client: HqClient, me: UserBundle, mePath: string, name: string, out: string | undefined): Promise<UserBundleResult> {
  const path = out ?? (name === me.name ? mePath : join(process.cwd(), `${name}.bundle.json`))
  if (path !== mePath) await refuseExisting(path)
  const {keyPem, csrPem} = await newKeyAndCsr(name, identityUri({kind: 'user', name}))
  const r = await client.request<IssuedUser>('POST', `/v1/users/${encodeURIComponent(name)}/renew`, {csr: csrPem})
  await writeBundle(path, bundleOf(r, keyPem, name === me.name ? me.hq_url : client.baseUrl, me.checkpoint_key))
  return {name: r.name, role: r.role, serial: r.serial, not_after: r.not_after, bundle: path}
}

function bundleOf(r: IssuedUser, keyPem: string, hqUrl: string, checkpointKey: string | undefined): UserBundle {
  return {
    jil_bundle: 1,
    kind: 'user',
    name: r.name,
    role: r.role,
    hq_url: hqUrl,
    ca_fingerprint: r.ca_fingerprint,
    cert: r.cert,
    key: keyPem,
    ca: r.ca,
    ...(checkpointKey ? {checkpoint_key: checkpointKey} : {}),
  }
}

/** Break-glass: with HQ stopped, issue a user bundle straight from the data dir (under its lock). */
export async function addUserOffline(dataDir: string, name: string, role: string, out: string | undefined): Promise<UserBundleResult> {
  const path = out ?? join(process.cwd(), `${name}.bundle.json`)
  await refuseExisting(path)
  const [{readHqConfig, readHqKeys, lockDataDir, hqPath}, {openHqDb, assertDbBelongsTo}, {CertificateAuthority}, {AuditLedger}, {IdentityService}, {fileSigner}, {systemClock}, {LOCKS}, {readText}] =
    await Promise.all([
      import('../hq/datadir.js'),
      import('../hq/store/index.js'),
      import('../hq/ca/ca.js'),
      import('../hq/audit/ledger.js'),
      import('../hq/identity/service.js'),
      import('../shared/signing.js'),
      import('../shared/clock.js'),
      import('../shared/db/types.js'),
      import('../shared/files.js'),
    ])
  const config = await readHqConfig(dataDir)
  const lock = await lockDataDir(dataDir, 'jil hq user add --data-dir (break-glass)')
  try {
    const keys = await readHqKeys(dataDir)
    const db = await openHqDb(config.database_url ? {databaseUrl: config.database_url} : {pgliteDir: hqPath(dataDir, 'db')})
    try {
      await assertDbBelongsTo(db, config.ca_fingerprint)
      const ca = await CertificateAuthority.load({certPem: keys.caCert, keyPem: keys.caKey}, systemClock)
      const ledger = new AuditLedger(db, systemClock, await fileSigner(keys.checkpointKey), config.ca_fingerprint)
      const identity = new IdentityService(db, ca, ledger, systemClock)
      const {keyPem, csrPem} = await newKeyAndCsr(name, identityUri({kind: 'user', name}))
      const r = await identity.addUser({type: 'hq', id: 'break-glass'}, name, role, csrPem)
      // HQ is stopped, so nobody else sequences: place the entry now.
      const seqLock = await db.tryAdvisoryLock(LOCKS.auditSequencer)
      if (seqLock) {
        await ledger.sequence(seqLock).finally(() => seqLock.release())
      }
      const checkpointKey = await readText(hqPath(dataDir, 'checkpointPub'), 'checkpoint public key')
      await writeBundle(
        path,
        bundleOf({name, role: r.role, cert: r.cert.pem, serial: r.cert.serial, not_after: r.cert.notAfter.toISOString(), ca: keys.caCert, ca_fingerprint: config.ca_fingerprint}, keyPem, config.hq_url, checkpointKey),
      )
      return {name, role: r.role, serial: r.cert.serial, not_after: r.cert.notAfter.toISOString(), bundle: path}
    } finally {
      await db.close()
    }
  } finally {
    await lock.release()
  }
}

export type CaExportResult = {ca: string; ca_fingerprint: string; crl?: {pem: string}; files: string[]}

/** The CA (and CRL) for brokers and peers, checked against the fingerprint pinned in the bundle. */
export async function exportCa(client: HqClient, me: UserBundle, withCrl: boolean, outDir: string | undefined): Promise<CaExportResult> {
  const {certFingerprint} = await import('../shared/pki.js')
  const ca = await client.request<string>('GET', '/v1/ca')
  if (certFingerprint(ca) !== me.ca_fingerprint) {
    throw new JilError('CA_FINGERPRINT_MISMATCH', 'HQ served a CA that differs from the one pinned in your bundle', {hint: 'check the --hq URL; your bundle belongs to another HQ'})
  }
  const crl = withCrl ? await client.request<string>('GET', '/v1/ca/crl?format=pem') : undefined
  const files: string[] = []
  if (outDir) {
    await writeFileAtomic(join(outDir, 'ca.crt'), ca, 0o644)
    files.push(join(outDir, 'ca.crt'))
    if (crl) {
      await writeFileAtomic(join(outDir, 'crl.pem'), crl, 0o644)
      files.push(join(outDir, 'crl.pem'))
    }
  }
  return {ca, ca_fingerprint: me.ca_fingerprint, ...(crl ? {crl: {pem: crl}} : {}), files}
}

/** 24h, 30m, 7d → milliseconds. */
export function parseTtl(s: string): number {
  const m = /^(\d+)([smhd])$/.exec(s)
  if (!m) throw new JilError('TTL_INVALID', `--ttl ${JSON.stringify(s)} is not a duration`, {exit: 2, hint: 'e.g. --ttl 24h, --ttl 30m, --ttl 7d'})
  return Number(m[1]) * {s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000}[m[2] as 's' | 'm' | 'h' | 'd']
}
