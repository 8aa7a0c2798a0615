import {spawn, type ChildProcess} from 'node:child_process'
import {openSync, closeSync} from 'node:fs'
import {mkdir, readFile, rm, writeFile} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {JilError} from '../shared/errors.js'
import {exists} from '../shared/files.js'

/**
 * Local helper processes of `jil dev`: free ports, and Debian's docker-registry as a child of the dev
 * process (stopped by its PID at the end; a registry a crashed run left behind is recognised by its
 * config path and ended at the next start).
 */

export const REGISTRY_BIN = '/usr/bin/docker-registry'

/** Whether 127.0.0.1:port can be listened on now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen({host: '127.0.0.1', port, exclusive: true}, () => s.close(() => resolve(true)))
  })
}

/** A port that is free now on 127.0.0.1 (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen({host: '127.0.0.1', port: 0, exclusive: true}, () => {
      const port = (s.address() as {port: number}).port
      s.close(() => resolve(port))
    })
  })
}

/** `preferred` when it is free, else any free port. */
export async function pickPort(preferred: number | undefined): Promise<number> {
  if (preferred !== undefined && preferred > 0 && (await portFree(preferred))) return preferred
  return freePort()
}

/** Is `pid` alive and does its command line contain `marker` (a recycled PID does not count)? */
export async function processMatches(pid: number, marker: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    return cmdline.split('\0').join(' ').includes(marker)
  } catch {
    return false
  }
}

export type LocalRegistry = {host: string; stop(): Promise<void>}

/**
 * Starts docker-registry on 127.0.0.1 (port `preferred` when free) storing in DIR/data, plain HTTP
 * on loopback (dockerd allows that for 127.0.0.0/8). Resolves once GET /v2/ answers.
 */
export async function startRegistry(o: {dir: string; preferred?: number; logFile: string}): Promise<LocalRegistry> {
  await mkdir(join(o.dir, 'data'), {recursive: true, mode: 0o700})
  const config = join(o.dir, 'config.yml')
  const pidFile = join(o.dir, 'registry.pid')
  const stale = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim())
  if (stale > 0 && (await processMatches(stale, config))) {
    try {
      process.kill(stale, 'SIGTERM')
    } catch {
      // gone meanwhile
    }
    for (let i = 0; i < 50 && (await processMatches(stale, config)); i++) await sleep(100)
  }
  const port = await pickPort(o.preferred)
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(o.dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
    {mode: 0o600},
  )
  const log = openSync(o.logFile, 'a')
  let child: ChildProcess
  try {
    child = spawn(REGISTRY_BIN, ['serve', config], {stdio: ['ignore', log, log]})
  } finally {
    closeSync(log)
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.once('error', () => {})
  if (child.pid) await writeFile(pidFile, `${child.pid}\n`)
  const host = `127.0.0.1:${port}`
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
    }
    await rm(pidFile, {force: true})
  }
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null || child.signalCode !== null) break
    try {
      const r = await fetch(`http://${host}/v2/`, {signal: AbortSignal.timeout(1000)})
      if (r.ok) return {host, stop}
    } catch {
      // not listening yet
    }
    await sleep(100)
  }
  await stop()
  throw new JilError('REGISTRY_FAILED', `the registry (${REGISTRY_BIN}) did not start on ${host}`, {hint: `see ${o.logFile}`})
}

export async function registryInstalled(): Promise<boolean> {
  return exists(REGISTRY_BIN)
}
