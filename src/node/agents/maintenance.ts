import {createReadStream, createWriteStream} from 'node:fs'
import {lstat, readdir, realpath, rename, rm, unlink} from 'node:fs/promises'
import {isAbsolute, join, resolve, sep} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {createGzip} from 'node:zlib'

import type {Finding} from '../../shared/api.js'
import {JilError, messageOf, systemCode} from '../../shared/errors.js'
import {diskUsage, type DiskUsage} from '../host.js'
import type {PruneResult} from '../runtime.js'
import {readAppliedDesiredState} from '../state.js'
import type {Agent} from './types.js'

/**
 * The maintenance agent (daily): rotates big logs, deletes old temp files, prunes dangling images
 * and this node's unused volumes (never anything labelled jil.keep=true), and warns on a full disk.
 */

// ---------------------------------------------------------------------------------------------
// Log rotation

/** A log being rotated: renamed away from its writers, not yet compressed (a crash leaves it for the next run). */
const STAGED = '.rotating'
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** Shifts NAME.N.gz up by one (dropping what would pass `keep`), then gzips the staged file into NAME.1.gz. */
async function finishRotation(dir: string, name: string, keep: number): Promise<void> {
  const path = join(dir, name)
  const rotatedRe = new RegExp(`^${escape(name)}\\.(\\d+)\\.gz$`)
  const numbers = (await readdir(dir))
    .map((f) => rotatedRe.exec(f)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => b - a)
  for (const n of numbers) {
    if (n >= keep) await rm(`${path}.${n}.gz`, {force: true})
    else await rename(`${path}.${n}.gz`, `${path}.${n + 1}.gz`)
  }
  const staged = path + STAGED
  const mode = (await lstat(staged)).mode & 0o666
  const tmp = `${path}.1.gz.tmp`
  // Streamed: a 100 MB log never sits in memory.
  await pipeline(createReadStream(staged), createGzip(), createWriteStream(tmp, {mode}))
  await rename(tmp, `${path}.1.gz`)
  await unlink(staged)
}

export type RotateResult = {rotated: string[]; findings: Finding[]}

/**
 * Rotates each regular file in `dir` larger than `maxBytes`: NAME → NAME.1.gz, older ones shifted,
 * at most `keep` kept. Writers that append per run (cron's `>>`) carry on in a fresh NAME; a writer
 * holding the file open keeps writing into the staged file until it reopens.
 */
export async function rotateLogs(dir: string, o: {maxBytes: number; keep: number}): Promise<RotateResult> {
  const out: RotateResult = {rotated: [], findings: []}
  let entries
  try {
    entries = await readdir(dir, {withFileTypes: true})
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return out
    throw err
  }
  const fail = (name: string, err: unknown) =>
    out.findings.push({
      id: `log-rotation-failed:${name}`.slice(0, 200),
      severity: 'warning',
      title: `log ${name} could not be rotated`.slice(0, 500),
      evidence: `${join(dir, name)}: ${systemCode(err) ?? messageOf(err)}`.slice(0, 4000),
      remediation: `check the permissions of ${dir}`.slice(0, 1000),
    })
  // Rotations a crash interrupted first, so their slot 1 is not overwritten.
  for (const e of entries) {
    if (!e.isFile() || !e.name.endsWith(STAGED)) continue
    const name = e.name.slice(0, -STAGED.length)
    await finishRotation(dir, name, o.keep).catch((err: unknown) => fail(name, err))
  }
  for (const e of entries) {
    // Dirents are lstat's view: a symlink is never a file here, so a link to elsewhere is never rotated.
    if (!e.isFile() || e.name.endsWith(STAGED) || /\.\d+\.gz(\.tmp)?$/.test(e.name)) continue
    const path = join(dir, e.name)
    try {
      const st = await lstat(path)
      if (!st.isFile() || st.size <= o.maxBytes) continue
      await rename(path, path + STAGED)
      await finishRotation(dir, e.name, o.keep)
      out.rotated.push(e.name)
    } catch (err) {
      fail(e.name, err)
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Temp files

export type TempCleanResult = {deleted: number; finding?: Finding}

/**
 * Deletes files (and symlinks: the link, never its target) older than `maxAgeMs` by mtime under
 * `dir`. Never follows a symlink, never removes a directory, never leaves `dir`'s filesystem.
 * Sockets and FIFOs are left alone (a live program may own one with an old mtime).
 *
 * The walk and the deletions are GNU find's (`-xdev`, `-delete`): it holds each directory open and
 * deletes relative to that handle (unlinkat), so a directory swapped for a symlink to /etc halfway
 * through cannot redirect a deletion. Node has no unlinkat; a check-then-unlink by path is a race a
 * local user can win against a root daemon.
 */
export async function cleanTempDir(dir: string, o: {maxAgeMs: number; now: Date; log?: (msg: string) => void}): Promise<TempCleanResult> {
  const refuse = (why: string): TempCleanResult => ({
    deleted: 0,
    finding: {
      id: `temp-dir-refused:${dir}`.slice(0, 200),
      severity: 'warning',
      title: `temp dir ${JSON.stringify(dir)} refused: ${why}`.slice(0, 500),
      evidence: `JIL_TEMP_DIRS contains ${JSON.stringify(dir)}`.slice(0, 4000),
      remediation: 'list absolute temp dirs other than / in JIL_TEMP_DIRS (colon-separated)',
    },
  })
  if (!isAbsolute(dir)) return refuse('not an absolute path')
  if (resolve(dir) === sep) return refuse('it is the root directory')
  let root: string
  try {
    root = await realpath(resolve(dir))
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return {deleted: 0}
    throw err
  }
  if (root === sep) return refuse('it resolves to the root directory')
  const cutoffS = Math.floor((o.now.getTime() - o.maxAgeMs) / 1000)
  // Not newer than the cutoff = modified at or before it. -print0 before -delete counts what goes.
  const args = [root, '-xdev', '-mindepth', '1', '(', '-type', 'f', '-o', '-type', 'l', ')', '!', '-newermt', `@${cutoffS}`, '-print0', '-delete']
  const {spawn} = await import('node:child_process')
  return new Promise<TempCleanResult>((done) => {
    const child = spawn('find', args, {stdio: ['ignore', 'pipe', 'pipe']})
    let deleted = 0
    let errors = ''
    child.stdout.on('data', (b: Buffer) => {
      for (const byte of b) if (byte === 0) deleted++
    })
    child.stderr.on('data', (b: Buffer) => {
      if (errors.length < 4000) errors += b.toString()
    })
    child.on('error', (err) => {
      done({
        deleted,
        finding: {id: `temp-clean-failed:${dir}`.slice(0, 200), severity: 'warning', title: `cannot clean temp dir ${dir}`.slice(0, 500), evidence: `find: ${messageOf(err)}`, remediation: 'install findutils (GNU find)'},
      })
    })
    child.on('close', () => {
      // Unreadable subdirectories or files that vanished meanwhile: logged, the rest is done.
      for (const line of errors.split('\n').filter(Boolean)) o.log?.(line)
      done({deleted})
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Disk

/** A warning at `warnPercent`, critical from 90 % (or from `warnPercent` when that is higher). Pure. */
export function diskFinding(path: string, usage: DiskUsage, warnPercent: number): Finding | undefined {
  if (usage.percent < warnPercent) return undefined
  const critical = usage.percent >= Math.max(90, warnPercent)
  const gib = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GiB`
  return {
    id: 'disk-usage',
    severity: critical ? 'critical' : 'warning',
    title: `disk ${usage.percent}% full`,
    evidence: `the filesystem of ${path}: ${gib(usage.used_bytes)} used of ${gib(usage.total_bytes)} (${usage.percent}% ≥ ${critical ? Math.max(90, warnPercent) : warnPercent}%)`,
    remediation: 'free space (old images: docker image ls; logs; volumes) or grow the disk',
  }
}

// ---------------------------------------------------------------------------------------------

export const maintenanceAgent: Agent = async (ctx) => {
  const s = ctx.settings
  const findings: Finding[] = []
  // Local work first: a full disk is freed even when the engine is down.
  const logs = await rotateLogs(s.logDir, {maxBytes: s.logMaxBytes, keep: s.logKeep})
  findings.push(...logs.findings)
  let tempDeleted = 0
  for (const dir of s.tempDirs) {
    const r = await cleanTempDir(dir, {maxAgeMs: s.tempMaxAgeMs, now: ctx.clock.now(), log: (msg) => ctx.log.warn({dir}, msg)})
    tempDeleted += r.deleted
    if (r.finding) findings.push(r.finding)
  }

  const runtime = await ctx.runtime()
  const prune = async (what: 'images' | 'volumes', fn: () => Promise<PruneResult>): Promise<PruneResult> => {
    try {
      return await fn()
    } catch (err) {
      if (!(err instanceof JilError)) throw err
      if (err.code === 'DOCKER_UNREACHABLE') {
        throw new JilError(err.code, `${err.message} (local work done: ${logs.rotated.length} log(s) rotated, ${tempDeleted} temp file(s) deleted)`, {...(err.hint ? {hint: err.hint} : {}), cause: err})
      }
      // The engine refused this one prune (e.g. 409: another prune is running): the rest of the run stands.
      findings.push({id: `prune-failed:${what}`, severity: 'warning', title: `the engine did not prune ${what}`, evidence: `${err.code}: ${err.message}`.slice(0, 4000), remediation: err.hint ?? 'see the Docker engine log'})
      return {deleted: [], reclaimed_bytes: 0}
    }
  }
  // What the desired state names stays, used or not (a pulled update target waits for its container).
  const keep = (await readAppliedDesiredState(ctx.stateDir))?.services.map((x) => x.digest) ?? []
  const images = await prune('images', () => runtime.pruneImages(keep))
  const volumes = await prune('volumes', () => runtime.pruneVolumes(ctx.nodeId))

  const disk = await diskUsage(s.diskPath)
  const full = diskFinding(s.diskPath, disk, s.diskWarnPercent)
  if (full) findings.push(full)
  const reclaimed = images.reclaimed_bytes + volumes.reclaimed_bytes
  return {
    summary: `pruned ${images.deleted.length} image(s) and ${volumes.deleted.length} volume(s) (${(reclaimed / 1024 ** 2).toFixed(1)} MiB); rotated ${logs.rotated.length} log(s); deleted ${tempDeleted} temp file(s); disk ${disk.percent}%`,
    findings,
    details: {
      images_pruned: images.deleted.length,
      volumes_pruned: volumes.deleted.length,
      reclaimed_bytes: reclaimed,
      rotated: logs.rotated,
      temp_deleted: tempDeleted,
      disk_percent: disk.percent,
    },
  }
}
