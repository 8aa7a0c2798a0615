import {HQ_FILES} from '../datadir.js'
import type {RecordedMigration} from './schema.js'

/** The last frame of an archive: what it holds and the SHA-256 of every member, checked before a restore writes anything. */
export type BackupManifest = {
  format: 1
  jil_version: string
  created_at: string
  /** The HQ the archive belongs to (config.json's, and the database's hq_meta). */
  ca_fingerprint: string
  /** Where the HQ kept its state when backed up. */
  database: 'embedded' | 'postgresql'
  migration_version: number
  migrations: RecordedMigration[]
  members: ManifestMember[]
  /** Rows per table, as dumped inside one snapshot. */
  tables: Record<string, number>
  /** `table.column` → the sequence's position: a restore sets it so new ids never reuse old ones (audit_pending's ids live on in audit_log.pending_id). */
  sequences: Record<string, number>
  audit_entries: number
  audit_checkpoints: number
}

export type ManifestMember =
  | {name: string; kind: 'table'; table: string; bytes: number; sha256: string; rows: number}
  | {name: string; kind: 'file'; file: string; mode: number; bytes: number; sha256: string}

/** A member's first frame. */
export type MemberStart = {name: string; kind: 'table'; table: string} | {name: string; kind: 'file'; file: string; mode: number}

export const tableMember = (table: string) => `db/${table}.ndjson`
export const fileMember = (file: string) => `files/${file}`

/** The data dir files an HQ cannot start without: a backup refuses a data dir missing one, a restore an archive missing one. */
export const REQUIRED_FILES: readonly string[] = [
  HQ_FILES.config,
  HQ_FILES.caCert,
  HQ_FILES.caKey,
  HQ_FILES.serverCert,
  HQ_FILES.serverKey,
  HQ_FILES.signingKey,
  HQ_FILES.signingPub,
  HQ_FILES.checkpointKey,
  HQ_FILES.checkpointPub,
]

/** A file name a restore may create in the data dir: a plain name, never the lock or the embedded database. */
export function safeFileName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/.test(name) && name !== HQ_FILES.lock && name !== HQ_FILES.db && !name.startsWith(`${HQ_FILES.lock}.`)
}

/** Private keys, the config (it may hold a database password) and bundles are restored 0600 whatever the archive says. */
export function restoredMode(name: string, archived: number): number {
  if (/\.key(\.|$)/.test(name) || name === HQ_FILES.config || name.endsWith('.bundle.json')) return 0o600
  return archived & 0o644
}
