import {spawn, type ChildProcess} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {createWriteStream} from 'node:fs'
import {mkdir, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {writeFileAtomic} from '../shared/files.js'
import type {DesiredService} from '../shared/stack.js'
import {LABELS, serviceLabels, type ContainerDetails, type ContainerHealth, type ContainerState, type ManagedContainer, type PruneResult, type Runtime} from './runtime.js'
import type {SignedCheck} from './trust.js'

/**
 * The no-container runtime (`jil dev --docker off`): each service's command runs as a child process
 * of this process, in a work dir of its own, and its health check runs as a command on the same
 * schedule Docker would use. Nothing is isolated — the processes run as this user, on the host's
 * network and file system, and ports, mounts and `user` are not applied — so this serves a fleet
 * simulated on one machine, never a real node.
 *
 * What it keeps honest: an image is only "there" after `pull` fetched its manifest from the registry
 * by digest, checked the bytes hash to that digest, and found a manifest for it signed with one of
 * the node's pinned keys (the reconcile path has already verified it for the node's track);
 * the state of each "container" is written to the node's dir, so a crash leaves a record the next
 * start uses to end orphaned processes.
 */


export type ProcessRuntimeOptions = {
  /** Where this node's runtime keeps its record and the containers' work dirs. */
  dir: string
  signed: SignedCheck
  /** How long stop() waits after SIGTERM by default (Docker's default is 10 s). */
  stopTimeoutS?: number
}

type ContainerRecord = {
  id: string
  name: string
  nodeId: string
  service: DesiredService
  image: string
  labels: Record<string, string>
  state: ContainerState
  health: ContainerHealth
  pid: number | null
  startedAt: string | null
  finishedAt: string | null
  exitCode: number | null
  restartCount: number
}

type Live = {child: ChildProcess; exited: Promise<void>; healthTimer?: NodeJS.Timeout; shell?: HealthShell; checking: boolean; failures: number}

/** The environment variable every service process carries: how a later start recognises an orphan of this runtime. */
export const CONTAINER_ENV = 'JIL_CONTAINER_ID'

const FILE = 'containers.json'
/** How long a start waits for the processes a crashed run left behind to end once killed. */
const ORPHAN_WAIT_MS = 5000
const IMAGES = 'images.json'

export class ProcessRuntime implements Runtime {
  private readonly containers = new Map<string, ContainerRecord>()
  private readonly live = new Map<string, Live>()
  private images = new Set<string>()
  private persisting: Promise<void> = Promise.resolve()
  private closed = false

  private constructor(private readonly o: ProcessRuntimeOptions) {}

  /**
   * Opens a node's runtime: reads its record, ends processes a crashed run left behind (recognised
   * by their CONTAINER_ENV), and shows their containers as exited, as Docker shows them after a reboot.
   */
  static async open(o: ProcessRuntimeOptions): Promise<ProcessRuntime> {
    const rt = new ProcessRuntime(o)
    await mkdir(o.dir, {recursive: true, mode: 0o700})
    const saved = await readJson<ContainerRecord[]>(join(o.dir, FILE))
    const orphans: number[] = []
    for (const c of saved ?? []) {
      if (c.pid !== null && (await isOurs(c.pid, c.id))) {
        killGroup(c.pid, 'SIGKILL')
        orphans.push(c.pid)
      }
      const wasLive = c.state === 'running' || c.state === 'restarting' || c.state === 'paused'
      rt.containers.set(c.id, {...c, pid: null, health: 'none', ...(wasLive ? {state: 'exited' as const, exitCode: 255, finishedAt: new Date().toISOString()} : {})})
    }
    // A service started again must not meet its old self (its port, its files): wait until they have ended.
    await Promise.all(orphans.map((pid) => ended(pid, ORPHAN_WAIT_MS)))
    rt.images = new Set((await readJson<string[]>(join(o.dir, IMAGES))) ?? [])
    await rt.persist()
    return rt
  }

  async ping(): Promise<void> {
    if (this.closed) throw new JilError('DOCKER_UNREACHABLE', 'the process runtime is closed', {hint: 'the dev fleet is stopping'})
  }

  async list(nodeId: string): Promise<ManagedContainer[]> {
    return [...this.containers.values()].filter((c) => c.labels[LABELS.node] === nodeId).map((c) => this.view(c))
  }

  async inspect(id: string): Promise<ContainerDetails> {
    const c = this.get(id)
    return {...this.view(c), user: c.service.user ?? '', startedAt: c.startedAt, finishedAt: c.finishedAt, exitCode: c.state === 'running' ? null : c.exitCode, restartCount: c.restartCount}
  }

  async hasImage(ref: string): Promise<boolean> {
    return this.images.has(ref)
  }

  /**
   * Fetches `repository@digest`'s manifest from its registry (with HQ's pull token) and keeps the
   * reference once the bytes hash to the digest and HQ's signature on the digest verifies. The
   * layers are not fetched: the processes run the host's commands.
   */
  async pull(repository: string, digest: string, registryToken?: string): Promise<void> {
    const ref = `${repository}@${digest}`
    if (!(await this.o.signed(digest))) {
      throw new JilError('PULL_FAILED', `refusing ${ref}: no manifest signed with the node's pinned keys`, {hint: 'sign the image at HQ (jil hq sign) and promote it to the node’s track'})
    }
    const slash = repository.indexOf('/')
    if (slash < 0) throw new JilError('PULL_FAILED', `${repository} names no registry host`, {hint: 'images run from REGISTRY/NAME@sha256:…'})
    const host = repository.slice(0, slash)
    const name = repository.slice(slash + 1)
    const scheme = /^(127\.|localhost[:]|\[::1\])/.test(host) ? 'http' : 'https'
    let body: Buffer
    try {
      const res = await fetch(`${scheme}://${host}/v2/${name}/manifests/${digest}`, {
        headers: {
          accept: ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', '),
          ...(registryToken ? {authorization: `Bearer ${registryToken}`} : {}),
        },
        signal: AbortSignal.timeout(30_000),
      })
      if (!res.ok) throw new Error(`the registry answered ${res.status}`)
      body = Buffer.from(await res.arrayBuffer())
    } catch (err) {
      throw new JilError('PULL_FAILED', `pulling ${ref} failed: ${messageOf(err)}`, {hint: 'check that the registry runs', cause: err})
    }
    const got = `sha256:${createHash('sha256').update(body).digest('hex')}`
    if (got !== digest) throw new JilError('PULL_FAILED', `the registry served ${got} for ${ref}`, {hint: 'the registry is not serving what was signed: check it'})
    this.images.add(ref)
    await this.persist()
  }

  async create(nodeId: string, s: DesiredService, name: string): Promise<string> {
    const image = `${s.repository}@${s.digest}`
    if (!this.images.has(image)) throw new JilError('DOCKER_NOT_FOUND', `create ${name}: no such image ${image}`, {hint: 'pull it first'})
    this.assertFreeName(name)
    const id = randomBytes(32).toString('hex')
    const labels = serviceLabels(nodeId, s)
    this.containers.set(id, {id, name, nodeId, service: s, image, labels, state: 'created', health: 'none', pid: null, startedAt: null, finishedAt: null, exitCode: null, restartCount: 0})
    await mkdir(this.workDir(id), {recursive: true, mode: 0o700})
    await this.persist()
    return id
  }

  async start(id: string): Promise<void> {
    const c = this.get(id)
    if (c.state === 'running') return
    if (this.closed) throw new JilError('DOCKER_ERROR', `start ${c.name}: the process runtime is closed`, {hint: 'the dev fleet is stopping'})
    const cmd = c.service.command?.length ? c.service.command : ['/bin/sh']
    const cwd = this.workDir(id)
    await mkdir(cwd, {recursive: true, mode: 0o700})
    const log = createWriteStream(join(cwd, 'output.log'), {flags: 'a'})
    const child = spawn(cmd[0]!, cmd.slice(1), {
      cwd,
      // Its own process group, so a stop ends the command and whatever it started (sh → sleep).
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, ...c.service.env, [CONTAINER_ENV]: id},
    })
    child.stdout?.pipe(log, {end: false})
    child.stderr?.pipe(log, {end: false})
    const exited = new Promise<void>((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        const h = this.live.get(id)
        if (h?.child !== child) return resolve()
        clearInterval(h.healthTimer)
        h.shell?.close()
        this.live.delete(id)
        log.end()
        const r = this.containers.get(id)
        if (r) {
          r.state = 'exited'
          r.pid = null
          r.health = 'none'
          r.exitCode = code ?? (signal ? 128 + signalNumber(signal) : 255)
          r.finishedAt = new Date().toISOString()
          void this.persist()
        }
        resolve()
      }
      child.once('exit', done)
      // A command that cannot be started (ENOENT) exits like Docker's "executable file not found": 127.
      child.once('error', () => done(127, null))
    })
    const h: Live = {child, exited, checking: false, failures: 0}
    this.live.set(id, h)
    c.state = 'running'
    c.pid = child.pid ?? null
    c.exitCode = null
    c.startedAt = new Date().toISOString()
    c.finishedAt = null
    const health = c.service.health
    if (health && health.test[0] !== 'NONE') {
      c.health = 'starting'
      const started = Date.now()
      h.healthTimer = setInterval(() => void this.check(id, h, started), (health.interval_s ?? 30) * 1000)
      h.healthTimer.unref()
    } else {
      c.health = 'none'
    }
    await this.persist()
  }

  /** One run of the health check (single-flight per container): Docker's rules for starting, healthy, unhealthy. */
  private async check(id: string, h: Live, started: number): Promise<void> {
    const c = this.containers.get(id)
    const health = c?.service.health
    if (!c || !health || h.checking || this.live.get(id) !== h) return
    h.checking = true
    try {
      const test = health.test
      const line = test[0] === 'CMD-SHELL' ? test.slice(1).join(' ') : test.slice(1).map(shellQuote).join(' ')
      h.shell ??= new HealthShell(this.workDir(id), {PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: this.workDir(id), ...c.service.env})
      const ok = await h.shell.run(line, (health.timeout_s ?? 30) * 1000)
      if (this.live.get(id) !== h) return
      if (ok) {
        h.failures = 0
        c.health = 'healthy'
      } else if (Date.now() - started >= (health.start_period_s ?? 0) * 1000 && ++h.failures >= (health.retries ?? 3)) {
        c.health = 'unhealthy'
      }
    } finally {
      h.checking = false
    }
  }

  async stop(id: string, timeoutS?: number): Promise<void> {
    const c = this.get(id)
    const h = this.live.get(id)
    if (!h) return
    const pid = h.child.pid
    if (pid !== undefined) killGroup(pid, 'SIGTERM')
    const grace = (timeoutS ?? c.service.stop_timeout_s ?? this.o.stopTimeoutS ?? 10) * 1000
    let timer: NodeJS.Timeout | undefined
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (pid !== undefined) killGroup(pid, 'SIGKILL')
        resolve()
      }, grace)
    })
    await Promise.race([h.exited, killed])
    clearTimeout(timer)
    await h.exited
  }

  async restart(id: string, timeoutS?: number): Promise<void> {
    await this.stop(id, timeoutS)
    await this.start(id)
  }

  async remove(id: string): Promise<void> {
    if (!this.containers.has(id)) return
    const h = this.live.get(id)
    if (h) {
      if (h.child.pid !== undefined) killGroup(h.child.pid, 'SIGKILL')
      await h.exited
    }
    this.containers.delete(id)
    await rm(this.workDir(id), {recursive: true, force: true})
    await this.persist()
  }

  async rename(id: string, name: string): Promise<void> {
    const c = this.get(id)
    if (c.name === name) return
    this.assertFreeName(name)
    c.name = name
    await this.persist()
  }

  async pruneImages(keep: readonly string[]): Promise<PruneResult> {
    const keepSet = new Set(keep)
    const used = new Set([...this.containers.values()].map((c) => c.image))
    const deleted = [...this.images].filter((ref) => !used.has(ref) && !keepSet.has(ref.slice(ref.indexOf('@') + 1)))
    for (const ref of deleted) this.images.delete(ref)
    if (deleted.length) await this.persist()
    return {deleted, reclaimed_bytes: 0}
  }

  async pruneVolumes(): Promise<PruneResult> {
    // No volumes: mounts are not applied by this runtime.
    return {deleted: [], reclaimed_bytes: 0}
  }

  /** Ends every process (SIGTERM, then SIGKILL after the stop timeout) and refuses new starts. */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.live.keys()].map((id) => this.stop(id)))
    await this.persisting
  }

  private get(id: string): ContainerRecord {
    const c = this.containers.get(id) ?? [...this.containers.values()].find((x) => x.name === id)
    if (!c) throw new JilError('DOCKER_NOT_FOUND', `no such container: ${id}`, {hint: 'it was removed'})
    return c
  }

  private assertFreeName(name: string): void {
    if ([...this.containers.values()].some((c) => c.name === name)) {
      throw new JilError('DOCKER_ERROR', `the container name ${name} is already in use`, {hint: 'remove or rename the other container'})
    }
  }

  private workDir(id: string): string {
    return join(this.o.dir, 'containers', id.slice(0, 12))
  }

  private view(c: ContainerRecord): ManagedContainer {
    return {
      id: c.id,
      name: c.name,
      nodeId: c.nodeId,
      service: c.labels[LABELS.service] ?? '',
      image: c.image,
      digest: c.labels[LABELS.digest] ?? null,
      version: c.labels[LABELS.version] ?? null,
      specHash: c.labels[LABELS.spec] ?? null,
      critical: c.labels[LABELS.critical] === 'true',
      state: c.state,
      health: c.health,
      labels: {...c.labels},
    }
  }

  /** Writes the record after every change, one write at a time (the last one wins). */
  private persist(): Promise<void> {
    const containers = JSON.stringify([...this.containers.values()], null, 2) + '\n'
    const images = JSON.stringify([...this.images].sort(), null, 2) + '\n'
    this.persisting = this.persisting
      .then(async () => {
        await writeFileAtomic(join(this.o.dir, FILE), containers, 0o600)
        await writeFileAtomic(join(this.o.dir, IMAGES), images, 0o600)
      })
      .catch(() => {})
    return this.persisting
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T
  } catch (err) {
    if (systemCode(err) === 'ENOENT' || err instanceof SyntaxError) return undefined
    throw err
  }
}

/** Is this pid a process this runtime started for container `id` (its environment names it)? */
async function isOurs(pid: number, id: string): Promise<boolean> {
  try {
    const env = await readFile(`/proc/${pid}/environ`, 'utf8')
    return env.split('\0').includes(`${CONTAINER_ENV}=${id}`)
  } catch {
    return false
  }
}

/** Has the process ended? A zombie (Z) or dead (X) one has: it only waits for its parent to read its status. */
export async function hasEnded(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // pid (comm) state …: comm may hold spaces and parentheses, the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X'
  } catch {
    return true
  }
}

/** Waits until a killed process has ended, at most `ms` (SIGKILL takes effect once the kernel schedules it). */
async function ended(pid: number, ms: number): Promise<void> {
  for (let waited = 0; waited < ms && !(await hasEnded(pid)); waited += 20) await sleep(20)
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    // Already gone.
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  return ({SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15} as Record<string, number>)[signal] ?? 0
}

/** A word for sh, single-quoted. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

const DONE = '__jil_health_rc'

/**
 * A container's health checks run as commands in one long-lived `sh` per container (a subshell
 * each, in the container's work dir): the check is still a real command, but this process does not
 * pay a spawn every few seconds per service (a spawn from a process holding HQ and twenty daemons
 * costs tens of milliseconds of its event loop). A check that outlives its timeout fails, and its
 * shell is ended and made anew for the next one.
 */
class HealthShell {
  private child: ChildProcess | undefined
  private out = ''
  private pending: ((rc: number) => void) | undefined

  constructor(
    private readonly cwd: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  run(line: string, timeoutMs: number): Promise<boolean> {
    const sh = (this.child ??= this.spawn())
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending = undefined
        this.close()
        resolve(false)
      }, timeoutMs)
      this.pending = (rc) => {
        clearTimeout(timer)
        this.pending = undefined
        resolve(rc === 0)
      }
      sh.stdin?.write(`(${line}\n) </dev/null >/dev/null 2>&1; echo "${DONE} $?"\n`)
    })
  }

  private spawn(): ChildProcess {
    const sh = spawn('/bin/sh', [], {cwd: this.cwd, env: this.env, stdio: ['pipe', 'pipe', 'ignore'], detached: true})
    this.out = ''
    sh.stdin?.on('error', () => {})
    sh.stdout?.setEncoding('utf8')
    sh.stdout?.on('data', (d: string) => {
      if (this.child !== sh) return // a shell ended after a timeout: its late output is not this check's
      this.out += d
      const m = new RegExp(`${DONE} (\\d+)\\n`).exec(this.out)
      if (!m) return
      this.out = this.out.slice(m.index + m[0].length)
      this.pending?.(Number(m[1]))
    })
    const gone = () => {
      if (this.child !== sh) return
      this.child = undefined
      this.pending?.(255)
    }
    sh.once('exit', gone)
    sh.once('error', gone)
    return sh
  }

  close(): void {
    const sh = this.child
    this.child = undefined
    if (sh?.pid !== undefined) killGroup(sh.pid, 'SIGKILL')
  }
}
