import {randomBytes} from 'node:crypto'
import {mkdir, readdir, rename, rm, rmdir, stat, writeFile} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'

import {defaultProfilePath, writeBundle, type UserBundle} from '../shared/bundle.js'
import type {Clock} from '../shared/clock.js'
import type {Db} from '../shared/db/types.js'
import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {exists, writeSecret} from '../shared/files.js'
import {fileSigner, generateEd25519Key} from '../shared/signing.js'
import {AuditLedger} from './audit/ledger.js'
import {CertificateAuthority, createCa} from './ca/ca.js'
import {HQ_FILES, hqPath, lockDataDir, writeHqConfig, type HqConfig} from './datadir.js'
import {getMeta, openHqDb, recordCertificate, setMeta} from './store/index.js'

export type HqInitOptions = {
  dataDir: string
  hostnames: string[]
  databaseUrl?: string
  force: boolean
  /** Where the first admin's bundle is also saved as the CLI's default profile (undefined: don't). */
  profilePath?: string | undefined
  /** The URL written into the admin bundle. */
  hqUrl: string
  clock: Clock
  progress?: (line: string) => void
}

export type HqInitResult = {
  data_dir: string
  ca_fingerprint: string
  signing_key_id: string
  checkpoint_key_id: string
  hq_url: string
  hostnames: string[]
  database: 'embedded' | 'postgresql'
  admin_bundle: string
  profile: string | null
}

/**
 * Creates an HQ: CA, server certificate, image-signing key and the first admin, in a fresh data dir.
 * Everything is built in a temporary sibling directory and renamed into place at the end, so a
 * failure (a database that refuses connections, a full disk) leaves no partial HQ behind.
 */
export async function initHq(o: HqInitOptions): Promise<HqInitResult> {
  const say = o.progress ?? (() => {})
  const hostnames = validateHostnames(o.hostnames)
  const existing = await inspectTarget(o.dataDir)
  if (existing === 'hq' && !o.force) {
    throw new JilError('HQ_EXISTS', `an HQ already exists in ${o.dataDir}`, {hint: 'use another --data-dir, or --force to replace it (its keys and embedded database are lost)'})
  }
  // Replacing a running HQ's dir would pull its keys from under it: take its lock first.
  const oldLock = existing === 'hq' ? await lockDataDir(o.dataDir, 'jil hq init --force') : undefined

  const parent = dirname(o.dataDir)
  try {
    await mkdir(parent, {recursive: true})
  } catch (err) {
    await oldLock?.release()
    throw new JilError('DATA_DIR_INVALID', `cannot create ${parent}: ${systemCode(err) ?? messageOf(err)}`, {hint: 'pass a --data-dir in a writable location'})
  }
  const tmp = join(parent, `.${basename(o.dataDir)}.init-${randomBytes(4).toString('hex')}`)
  let db: Db | undefined
  try {
    await mkdir(tmp, {mode: 0o700})
    const tmpLock = await lockDataDir(tmp, 'jil hq init')

    say(o.databaseUrl ? 'connecting to PostgreSQL' : 'creating the embedded database')
    db = await openHqDb(o.databaseUrl ? {databaseUrl: o.databaseUrl} : {pgliteDir: join(tmp, HQ_FILES.db)})
    const other = await getMeta(db, 'ca_fingerprint')
    if (other) {
      throw new JilError('DB_IN_USE', `the database already holds an HQ (CA ${other})`, {
        hint: 'give every new HQ an empty database; replicas of one HQ share its data dir instead of running init',
      })
    }

    say('creating the CA, the HQ certificate and the image-signing key')
    const caPair = await createCa(o.clock)
    const ca = await CertificateAuthority.load(caPair, o.clock)
    const server = await ca.issueServer(hostnames)
    const signing = await generateEd25519Key()
    const checkpointKey = await generateEd25519Key()
    const admin = await ca.issueUser('admin', 'admin')

    await writeFile(join(tmp, HQ_FILES.caCert), caPair.certPem, {mode: 0o644})
    await writeSecret(join(tmp, HQ_FILES.caKey), caPair.keyPem)
    await writeFile(join(tmp, HQ_FILES.serverCert), server.pem, {mode: 0o644})
    await writeSecret(join(tmp, HQ_FILES.serverKey), server.keyPem)
    await writeSecret(join(tmp, HQ_FILES.signingKey), signing.privatePem)
    await writeFile(join(tmp, HQ_FILES.signingPub), signing.publicPem, {mode: 0o644})
    await writeSecret(join(tmp, HQ_FILES.checkpointKey), checkpointKey.privatePem)
    await writeFile(join(tmp, HQ_FILES.checkpointPub), checkpointKey.publicPem, {mode: 0o644})
    const config: HqConfig = {
      version: 1,
      hostnames,
      hq_url: o.hqUrl,
      ca_fingerprint: caPair.fingerprint,
      signing_key_id: signing.keyId,
      checkpoint_key_id: checkpointKey.keyId,
      ...(o.databaseUrl ? {database_url: o.databaseUrl} : {}),
      created_at: o.clock.now().toISOString(),
    }
    await writeHqConfig(tmp, config)
    const bundle: UserBundle = {
      jil_bundle: 1,
      kind: 'user',
      name: 'admin',
      role: 'admin',
      hq_url: o.hqUrl,
      ca_fingerprint: caPair.fingerprint,
      cert: admin.pem,
      key: admin.keyPem,
      ca: caPair.certPem,
      checkpoint_key: checkpointKey.publicPem,
    }
    await writeBundle(join(tmp, HQ_FILES.adminBundle), bundle)

    const ledger = new AuditLedger(db, o.clock, await fileSigner(checkpointKey.privatePem), caPair.fingerprint)
    await db.transaction(async (tx) => {
      await setMeta(tx, 'ca_fingerprint', caPair.fingerprint)
      await setMeta(tx, 'checkpoint_key_id', checkpointKey.keyId)
      await setMeta(tx, 'signing_key_id', signing.keyId)
      await tx.query('INSERT INTO users (name, role, created_at) VALUES ($1, $2, $3)', ['admin', 'admin', o.clock.now()])
      for (const [kind, c, subject] of [
        ['server', server, hostnames[0] ?? 'localhost'],
        ['user', admin, 'admin'],
      ] as const) {
        await recordCertificate(tx, {serial: c.serial, kind, subject, fingerprint: c.fingerprint, not_before: c.notBefore, not_after: c.notAfter})
      }
      // The genesis entry: the ledger starts with the HQ it belongs to.
      await ledger.append(tx, {
        actor: {type: 'hq', id: 'hq'},
        action: 'hq.init',
        subject: caPair.fingerprint,
        details: {ca_fingerprint: caPair.fingerprint, signing_key_id: signing.keyId, checkpoint_key_id: checkpointKey.keyId, hostnames, admin: 'admin', admin_cert_serial: admin.serial},
      })
    })
    await ledger.sequenceNow()
    await ledger.checkpoint()
    await db.close()
    db = undefined
    await tmpLock.release()

    // Into place: the old HQ (with --force) is moved aside first and removed last.
    let aside: string | undefined
    if (existing === 'hq') {
      aside = join(parent, `.${basename(o.dataDir)}.old-${randomBytes(4).toString('hex')}`)
      await rename(o.dataDir, aside)
    } else if (existing === 'empty') {
      await rmdir(o.dataDir)
    }
    await rename(tmp, o.dataDir)
    if (aside) await rm(aside, {recursive: true, force: true})

    let profile: string | null = null
    if (o.profilePath) {
      if (await exists(o.profilePath)) {
        const backup = `${o.profilePath}.${o.clock.now().toISOString().replace(/[:.]/g, '-')}.bak`
        await rename(o.profilePath, backup)
        say(`the previous default profile was kept as ${backup}`)
      }
      await writeBundle(o.profilePath, bundle)
      profile = o.profilePath
    }
    return {
      data_dir: o.dataDir,
      ca_fingerprint: caPair.fingerprint,
      signing_key_id: signing.keyId,
      checkpoint_key_id: checkpointKey.keyId,
      hq_url: o.hqUrl,
      hostnames,
      database: o.databaseUrl ? 'postgresql' : 'embedded',
      admin_bundle: hqPath(o.dataDir, 'adminBundle'),
      profile,
    }
  } catch (err) {
    await db?.close().catch(() => {})
    await rm(tmp, {recursive: true, force: true})
    throw err
  } finally {
    await oldLock?.release()
  }
}

/** What is at the target path: nothing, an empty dir, an HQ; anything else is refused. */
async function inspectTarget(dir: string): Promise<'none' | 'empty' | 'hq'> {
  let st
  try {
    st = await stat(dir)
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return 'none'
    throw new JilError('DATA_DIR_INVALID', `cannot use ${dir}: ${systemCode(err) ?? messageOf(err)}`, {hint: 'pass a --data-dir you can write to'})
  }
  if (!st.isDirectory()) throw new JilError('DATA_DIR_INVALID', `${dir} exists and is not a directory`, {hint: 'pass a new or empty directory as --data-dir'})
  const entries = await readdir(dir)
  if (entries.length === 0) return 'empty'
  if (entries.includes(HQ_FILES.config)) return 'hq'
  throw new JilError('DATA_DIR_NOT_EMPTY', `${dir} is not empty and holds no HQ`, {hint: 'pass a new or empty directory as --data-dir'})
}

function validateHostnames(hostnames: string[]): string[] {
  for (const h of hostnames) {
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(h) && !/^[0-9a-fA-F:]+$/.test(h)) {
      throw new JilError('HOSTNAME_INVALID', `--hostname ${JSON.stringify(h)} is not a DNS name or IP address`, {hint: 'pass names like hq.example.com or 10.0.0.5', exit: 2})
    }
  }
  return [...new Set(hostnames)]
}

export {defaultProfilePath}
