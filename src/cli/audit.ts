import {createReadStream} from 'node:fs'
import {open, rename, rm} from 'node:fs/promises'
import {createInterface} from 'node:readline'

import {checkpointKeyFromPem, checkpointProblem, tamperedError, verifyEntryInclusion, verifyExportLines, type AuditVerifyReport, type CheckpointKey, type VerifyParallelism} from '../shared/audit-verify.js'
import {loadUserBundle} from '../shared/bundle.js'
import type {Clock} from '../shared/clock.js'
import {JilError, usageError} from '../shared/errors.js'
import {fileError, readText} from '../shared/files.js'
import type {HqClient} from '../shared/hq-client.js'
import type {InclusionProof} from '../shared/api.js'
import type {Checkpoint} from '../shared/audit.js'

/** The checkpoint key to verify against: --checkpoint-key FILE, else the one pinned in the user bundle. */
export async function pinnedCheckpointKey(keyFile: string | undefined, userFlag: string | undefined): Promise<CheckpointKey> {
  if (keyFile) return checkpointKeyFromPem(await readText(keyFile, 'checkpoint public key'))
  const {path, bundle} = await loadUserBundle(userFlag)
  if (!bundle.checkpoint_key) {
    throw new JilError('NO_CHECKPOINT_KEY', `the user bundle ${path} has no pinned audit checkpoint key`, {hint: 'pass --checkpoint-key FILE (checkpoint.pub from the HQ data dir)'})
  }
  return checkpointKeyFromPem(bundle.checkpoint_key)
}

export async function verifyFromHq(client: HqClient, pinned: CheckpointKey, parallel?: VerifyParallelism): Promise<AuditVerifyReport> {
  return verifyExportLines(client.lines('/v1/audit/export'), pinned, parallel)
}

export async function verifyFromFile(file: string, pinned: CheckpointKey, parallel?: VerifyParallelism): Promise<AuditVerifyReport> {
  const stream = createReadStream(file)
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve())
    stream.once('error', (err) => reject(fileError(file, 'audit export', err)))
  })
  await opened
  try {
    return await verifyExportLines(createInterface({input: stream, crlfDelay: Infinity}), pinned, parallel)
  } finally {
    stream.destroy()
  }
}

/** A verification that found tampering is a failure of the command (exit 1), naming the first bad seq. */
export function assertVerified(report: AuditVerifyReport): AuditVerifyReport {
  if (!report.ok && report.problem) throw tamperedError(report.problem)
  return report
}

export type AuditExportResult = {file: string; entries: number; checkpoints: number; bytes: number}

/** Saves HQ's export stream to FILE (written aside, then renamed: never a half file under the name). */
export async function exportToFile(client: HqClient, file: string): Promise<AuditExportResult> {
  const tmp = `${file}.partial-${process.pid}`
  let fh
  try {
    fh = await open(tmp, 'wx', 0o600)
  } catch (err) {
    throw fileError(tmp, 'export file', err)
  }
  let entries = 0
  let checkpoints = 0
  let bytes = 0
  try {
    let buf = ''
    for await (const line of client.lines('/v1/audit/export')) {
      if (line.startsWith('{"type":"entry"')) entries += 1
      else if (line.startsWith('{"type":"checkpoint"')) checkpoints += 1
      buf += line + '\n'
      if (buf.length > 1 << 20) {
        bytes += (await fh.write(buf)).bytesWritten
        buf = ''
      }
    }
    if (buf) bytes += (await fh.write(buf)).bytesWritten
    await fh.sync()
    await fh.close()
    await rename(tmp, file)
  } catch (err) {
    await fh.close().catch(() => {})
    await rm(tmp, {force: true})
    throw err
  }
  return {file, entries, checkpoints, bytes}
}

export type AuditProofResult = InclusionProof & {checkpoint: Checkpoint; verified: true}

/**
 * Fetches the inclusion proof of entry SEQ and checks it here: the checkpoint's signature against the
 * pinned key, the entry's hash against its content, the proof against the signed root.
 */
export async function proveEntry(client: HqClient, seq: number, pinned: CheckpointKey): Promise<AuditProofResult> {
  let checkpoint = await client.latestCheckpoint().catch((err: unknown) => {
    if (err instanceof JilError && err.code === 'NO_CHECKPOINT') return undefined
    throw err
  })
  if (!checkpoint || checkpoint.tree_size < seq) checkpoint = await client.signCheckpoint()
  const bad = checkpointProblem(checkpoint, pinned)
  if (bad) throw tamperedError(bad)
  const proof = await client.inclusionProof(seq, checkpoint.tree_size)
  if (proof.entry.seq !== seq || !verifyEntryInclusion(proof.entry, proof.proof, checkpoint)) {
    throw new JilError('AUDIT_PROOF_INVALID', `the inclusion proof of entry ${seq} does not match HQ's signed checkpoint at size ${checkpoint.tree_size}`, {
      hint: 'treat the HQ database as compromised; run jil audit verify',
    })
  }
  return {...proof, checkpoint, verified: true}
}

/** --since/--until: an ISO 8601 time, or a duration back from now (30m, 6h, 7d). */
export function parseTimeFlag(value: string, flag: string, clock: Clock): string {
  const m = /^(\d+)([smhd])$/.exec(value)
  if (m) {
    const ms = Number(m[1]) * {s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000}[m[2] as 's' | 'm' | 'h' | 'd']
    return new Date(clock.now().getTime() - ms).toISOString()
  }
  const t = new Date(value)
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t.getTime())) {
    throw usageError('TIME_INVALID', `${flag} ${JSON.stringify(value)} is neither an ISO time nor a duration`, `e.g. ${flag} 2026-11-27T10:00:00Z or ${flag} 24h`)
  }
  return t.toISOString()
}
