import {randomBytes} from 'node:crypto'
import {constants} from 'node:fs'
import {mkdir, open, readFile, rename, rm, stat, writeFile} from 'node:fs/promises'
import {dirname} from 'node:path'

import {JilError, systemCode} from './errors.js'

/** Writes a file atomically (temp file + rename) with the given mode; secrets get 0600. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`
  try {
    await mkdir(dirname(path), {recursive: true, mode: 0o700})
    await writeFile(tmp, data, {mode, flag: 'wx'})
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, {force: true}).catch(() => {})
    throw new JilError('FILE_UNWRITABLE', `cannot write ${path}: ${systemCode(err) ?? String(err)}`, {hint: `pick a path in a directory you can write to`, cause: err})
  }
}

export async function writeSecret(path: string, data: string | Uint8Array): Promise<void> {
  await writeFileAtomic(path, data, 0o600)
}

/**
 * Reads a private key or bundle. Refuses a file others can read (like ssh does) and turns
 * missing/unreadable files into a clear error.
 */
export async function readSecret(path: string, what: string): Promise<string> {
  let st
  try {
    st = await stat(path)
  } catch (err) {
    throw fileError(path, what, err)
  }
  if (!st.isFile()) throw new JilError('FILE_INVALID', `${what} ${path} is not a file`, {hint: `point to the ${what} file`})
  if ((st.mode & 0o077) !== 0) {
    throw new JilError('KEY_PERMISSIONS', `${what} ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)})`, {
      hint: `chmod 600 ${path}`,
    })
  }
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw fileError(path, what, err)
  }
}

export async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw fileError(path, what, err)
  }
}

export function fileError(path: string, what: string, err: unknown): JilError {
  const code = systemCode(err)
  if (code === 'ENOENT') return new JilError('FILE_MISSING', `${what} ${path} does not exist`, {hint: `check the path of the ${what}`, cause: err})
  if (code === 'EACCES' || code === 'EPERM')
    return new JilError('FILE_UNREADABLE', `${what} ${path} cannot be read (permission denied)`, {hint: `run as the user that owns ${path}`, cause: err})
  if (code === 'EISDIR') return new JilError('FILE_INVALID', `${what} ${path} is a directory`, {hint: `point to the ${what} file`, cause: err})
  return new JilError('FILE_UNREADABLE', `${what} ${path} cannot be read: ${code ?? String(err)}`, {hint: `check ${path}`, cause: err})
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

/** Creates a file exclusively; false when it already exists. */
export async function createExclusive(path: string, data: string): Promise<boolean> {
  try {
    const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)
    await fh.writeFile(data)
    await fh.close()
    return true
  } catch (err) {
    if (systemCode(err) === 'EEXIST') return false
    throw err
  }
}

/** A lock held through a file naming its process: exclusive across processes, taken over when stale. */
export type FileLock = {release(): Promise<void>}

/**
 * Takes the lock file `path` for `holder`. When another live process holds it, throws what `busy`
 * returns; a lock left by a process that is gone (crash, kill -9) is taken over.
 */
export async function lockFile(path: string, holder: string, busy: (other: {pid: number; holder: string}) => JilError): Promise<FileLock> {
  const token = randomBytes(8).toString('hex')
  const content = JSON.stringify({pid: process.pid, holder, token, since: new Date().toISOString()}) + '\n'
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await createExclusive(path, content)) {
      let released = false
      return {
        async release() {
          if (released) return
          released = true
          // Only our own lock: the file may have moved with its directory (hq init --force).
          if ((await readLockFile(path))?.token === token) await rm(path, {force: true})
        },
      }
    }
    const other = await readLockFile(path)
    if (other && pidAlive(other.pid)) throw busy(other)
    // Stale: move it aside atomically, then make sure what we moved was the stale lock and not a
    // fresh one another process took in the meantime (then put it back and report it busy).
    const aside = `${path}.stale-${process.pid}-${token}`
    try {
      await rename(path, aside)
    } catch {
      continue // someone else moved or removed it first
    }
    const moved = await readLockFile(aside)
    if (moved && pidAlive(moved.pid)) {
      await rename(aside, path).catch(() => {})
      throw busy(moved)
    }
    await rm(aside, {force: true})
  }
  throw new JilError('LOCKED', `cannot take the lock ${path}`, {hint: `remove ${path} if no jil process uses it`})
}

async function readLockFile(path: string): Promise<{pid: number; holder: string; token?: string} | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as {pid?: unknown; holder?: unknown; token?: unknown}
    return typeof v.pid === 'number' ? {pid: v.pid, holder: String(v.holder ?? 'jil'), ...(typeof v.token === 'string' ? {token: v.token} : {})} : undefined
  } catch {
    return undefined
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return systemCode(err) === 'EPERM'
  }
}
