import {readFile, stat} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {JilError, systemCode} from '../shared/errors.js'
import {fileError, lockFile, readSecret, readText, writeFileAtomic} from '../shared/files.js'

/** What lives in HQ's data dir. Keys are 0600; the directory is 0700. */
export const HQ_FILES = {
  config: 'config.json',
  caCert: 'ca.crt',
  caKey: 'ca.key',
  serverCert: 'hq.crt',
  serverKey: 'hq.key',
  signingKey: 'signing.key',
  signingPub: 'signing.pub',
  checkpointKey: 'checkpoint.key',
  checkpointPub: 'checkpoint.pub',
  adminBundle: 'admin.bundle.json',
  registryTokenKey: 'registry-token.key',
  registryTokenCert: 'registry-token.crt',
  db: 'db',
  lock: 'hq.lock',
} as const

export type HqConfig = {
  version: 1
  hostnames: string[]
  hq_url: string
  ca_fingerprint: string
  signing_key_id: string
  checkpoint_key_id: string
  /** The OCI registry (HOST:PORT) whose images HQ signs, for `jil hq images --unsigned`. */
  registry?: string
  /** Hardware a joining node must report; defaults apply when absent. */
  join_minimums?: {cpu_cores: number; memory_bytes: number; disk_bytes: number}
  /** Set when HQ stores its state in a PostgreSQL server rather than the embedded db/ directory. */
  database_url?: string
  created_at: string
}

export function hqPath(dataDir: string, file: keyof typeof HQ_FILES): string {
  return join(dataDir, HQ_FILES[file])
}

export function normalizeDataDir(dir: string | undefined): string {
  if (dir === undefined || dir.trim() === '' || dir.includes('\0')) {
    throw new JilError('DATA_DIR_INVALID', 'the --data-dir is empty or not a valid path', {hint: 'pass --data-dir DIR', exit: 2})
  }
  return resolve(dir)
}

/** Reads config.json of an initialised HQ data dir, or says clearly why it is not one. */
export async function readHqConfig(dataDir: string): Promise<HqConfig> {
  let st
  try {
    st = await stat(dataDir)
  } catch (err) {
    if (systemCode(err) === 'ENOENT')
      throw new JilError('DATA_DIR_MISSING', `HQ data dir ${dataDir} does not exist`, {hint: 'create it with jil hq init --data-dir DIR'})
    throw err
  }
  if (!st.isDirectory()) throw new JilError('DATA_DIR_INVALID', `${dataDir} is not a directory`, {hint: 'pass the directory jil hq init created'})
  let text: string
  try {
    text = await readFile(hqPath(dataDir, 'config'), 'utf8')
  } catch (err) {
    if (systemCode(err) === 'ENOENT')
      throw new JilError('DATA_DIR_NOT_HQ', `${dataDir} is not an HQ data dir (no ${HQ_FILES.config})`, {hint: 'create one with jil hq init --data-dir DIR'})
    throw fileError(hqPath(dataDir, 'config'), 'HQ config', err)
  }
  try {
    const c = JSON.parse(text) as HqConfig
    if (c.version !== 1 || typeof c.ca_fingerprint !== 'string' || !Array.isArray(c.hostnames)) throw new Error('fields')
    return c
  } catch {
    throw new JilError('DATA_DIR_CORRUPT', `${hqPath(dataDir, 'config')} is not a valid HQ config`, {hint: 'restore the HQ data dir from a backup'})
  }
}

export async function writeHqConfig(dataDir: string, config: HqConfig): Promise<void> {
  // 0600: a database URL may carry a password.
  await writeFileAtomic(hqPath(dataDir, 'config'), JSON.stringify(config, null, 2) + '\n', 0o600)
}

export type HqKeys = {caCert: string; caKey: string; serverCert: string; serverKey: string; signingKey: string; checkpointKey: string}

export async function readHqKeys(dataDir: string): Promise<HqKeys> {
  return {
    caCert: await readText(hqPath(dataDir, 'caCert'), 'CA certificate'),
    caKey: await readSecret(hqPath(dataDir, 'caKey'), 'CA key'),
    serverCert: await readText(hqPath(dataDir, 'serverCert'), 'HQ server certificate'),
    serverKey: await readSecret(hqPath(dataDir, 'serverKey'), 'HQ server key'),
    signingKey: await readSecret(hqPath(dataDir, 'signingKey'), 'image-signing key'),
    checkpointKey: await readSecret(hqPath(dataDir, 'checkpointKey'), 'audit checkpoint key'),
  }
}

/** The data dir's lock: only one process (hq init, hq serve, break-glass user add) opens it at a time. */
export type DataDirLock = {release(): Promise<void>}

export function lockDataDir(dataDir: string, holder: string): Promise<DataDirLock> {
  return lockFile(hqPath(dataDir, 'lock'), holder, (other) =>
    new JilError('DATA_DIR_LOCKED', `HQ data dir ${dataDir} is in use by ${other.holder} (pid ${other.pid})`, {
      hint: 'stop that process first, or talk to the running HQ with --hq URL instead of --data-dir',
    }),
  )
}
