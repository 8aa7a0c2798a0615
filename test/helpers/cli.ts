import {spawn, type ChildProcess} from 'node:child_process'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'

import {expect} from 'vitest'

import {tempDir} from './hq.js'

export const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

export type CliResult = {code: number | null; stdout: string; stderr: string; json: () => any}

/** Runs the built CLI as a real child process (`bin/run.js`), as a user would. */
export function jil(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) =>
      resolve({
        code,
        stdout,
        stderr,
        json: () => {
          try {
            return JSON.parse(stdout)
          } catch {
            throw new Error(`stdout is not one JSON document:\n${stdout}\nstderr:\n${stderr}`)
          }
        },
      }),
    )
  })
}

/** Starts a long-running command with --json and resolves with its first stdout line (the ready line). */
export function jilServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{child: ChildProcess; ready: any; stderr: () => string; exited: Promise<number | null>}> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    const lines = createInterface({input: child.stdout!})
    lines.once('line', (line) => {
      try {
        resolve({child, ready: JSON.parse(line), stderr: () => stderr, exited})
      } catch (err) {
        reject(err)
      }
    })
    void exited.then((code) => reject(new Error(`exited ${code} before ready:\n${stderr}`)))
  })
}

/**
 * `jil hq init` into DIR/hq, HQ's join minimums lowered (this machine, or CI's, must not decide a
 * test), then `jil hq serve` on 127.0.0.1:0 as a child process. Sets env.JIL_HQ_URL to its URL.
 */
export async function startHqProcess(dir: string, env: NodeJS.ProcessEnv): Promise<{serve: Awaited<ReturnType<typeof jilServe>>; fingerprint: string; hqDir: string}> {
  const hqDir = join(dir, 'hq')
  const init = await jil(['hq', 'init', '--data-dir', hqDir, '--json'], env)
  if (init.code !== 0) throw new Error(`jil hq init failed:\n${init.stderr}`)
  const config = JSON.parse(await readFile(join(hqDir, 'config.json'), 'utf8'))
  await writeFile(join(hqDir, 'config.json'), JSON.stringify({...config, join_minimums: {cpu_cores: 1, memory_bytes: 1, disk_bytes: 1}}), {mode: 0o600})
  const serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
  env.JIL_HQ_URL = serve.ready.url
  return {serve, fingerprint: init.json().ca_fingerprint as string, hqDir}
}

/** Runs the CLI and expects it to exit 0 (the command line and its stderr in the failure). */
export async function jilOk(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const r = await jil(args, env)
  expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(0)
  return r
}

export type CliHq = {
  tmp: Awaited<ReturnType<typeof tempDir>>
  env: NodeJS.ProcessEnv
  serve: Awaited<ReturnType<typeof jilServe>>
  fingerprint: string
  /** Ends `jil hq serve` and removes the temp dir. */
  stop: () => Promise<void>
}

/**
 * A CLI user's world: a temp dir, an env with its own XDG config and none of the caller's JIL_*
 * settings, and a real `jil hq serve` in it (startHqProcess; env.JIL_HQ_URL set to it).
 */
export async function startCliHq(prefix: string): Promise<CliHq> {
  const tmp = await tempDir(prefix)
  const env: NodeJS.ProcessEnv = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: ''}
  try {
    const {serve, fingerprint} = await startHqProcess(tmp.dir, env)
    return {
      tmp,
      env,
      serve,
      fingerprint,
      stop: async () => {
        serve.child.kill('SIGTERM')
        await serve.exited
        await tmp.cleanup()
      },
    }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}
