import type Dockerode from 'dockerode'

import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {serviceSpecHash, type DesiredService} from '../shared/stack.js'

/**
 * The container engine as the agents see it (DESIGN.md §2: an adapter at the edge). Everything is
 * scoped by the labels jil puts on its containers — `jil.node=<id>`, `jil.service=<name>` — so nodes
 * sharing one engine (tests, `jil dev`) never see or touch each other's containers.
 */
export const LABELS = {
  node: 'jil.node',
  service: 'jil.service',
  /** serviceSpecHash of what the container was created from: a changed spec is replaced like a changed digest. */
  spec: 'jil.spec',
  digest: 'jil.digest',
  version: 'jil.version',
  critical: 'jil.critical',
  /** Never pruned by maintenance. */
  keep: 'jil.keep',
} as const

export type ContainerState = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead'
export type ContainerHealth = 'healthy' | 'unhealthy' | 'starting' | 'none'

export type ManagedContainer = {
  id: string
  /** Without docker's leading slash. */
  name: string
  nodeId: string
  service: string
  /** What the container was created from, e.g. `127.0.0.1:5000/jil/api@sha256:…`. */
  image: string
  digest: string | null
  version: string | null
  specHash: string | null
  critical: boolean
  state: ContainerState
  health: ContainerHealth
  labels: Record<string, string>
}

export type ContainerDetails = ManagedContainer & {
  /** The user the process runs as ('' = the image's default, usually root). */
  user: string
  startedAt: string | null
  finishedAt: string | null
  exitCode: number | null
  restartCount: number
}

export type PruneResult = {deleted: string[]; reclaimed_bytes: number}

/** A Runtime runs containers for a node; Docker (dockerode) is the one here. */
export interface Runtime {
  ping(): Promise<void>
  /** Every container labelled jil.node=<nodeId>, whatever its state. */
  list(nodeId: string): Promise<ManagedContainer[]>
  inspect(id: string): Promise<ContainerDetails>
  hasImage(ref: string): Promise<boolean>
  /** Pulls `repository@digest`, with a registry bearer token from HQ when given. */
  pull(repository: string, digest: string, registryToken?: string): Promise<void>
  /** Creates (not starts) a container for the service from `repository@digest`, labelled for the node. */
  create(nodeId: string, service: DesiredService, name: string): Promise<string>
  start(id: string): Promise<void>
  stop(id: string, timeoutS?: number): Promise<void>
  restart(id: string, timeoutS?: number): Promise<void>
  remove(id: string): Promise<void>
  rename(id: string, name: string): Promise<void>
  /**
   * Unused dangling images (no tag), never ones labelled jil.keep=true nor those of the `keep` digests
   * (what the node's desired state names: an image pulled by digest has no tag, and Docker 20.10's own
   * prune would count it as dangling).
   */
  pruneImages(keep: readonly string[]): Promise<PruneResult>
  /** Unused volumes of this node (labelled jil.node=<id>), never ones labelled jil.keep=true. */
  pruneVolumes(nodeId: string): Promise<PruneResult>
}

/** The labels of a node's service container: what list(), the reconciler and prunes select and compare by. */
export function serviceLabels(nodeId: string, s: DesiredService): Record<string, string> {
  return {
    [LABELS.node]: nodeId,
    [LABELS.service]: s.name,
    [LABELS.spec]: serviceSpecHash(s),
    [LABELS.digest]: s.digest,
    [LABELS.version]: s.version,
    [LABELS.critical]: String(s.critical),
  }
}

/** The container name of a node's service: `jil-ch-zug-01-api`. */
export function containerName(nodeId: string, service: string): string {
  return `jil-${nodeId.toLowerCase()}-${service}`
}

const STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']

function stateOf(s: string | undefined): ContainerState {
  return (STATES as readonly string[]).includes(s ?? '') ? (s as ContainerState) : 'dead'
}

/** Docker's list Status text carries the health: "Up 5 minutes (healthy)", "(health: starting)". */
function healthFromStatus(status: string | undefined): ContainerHealth {
  if (!status) return 'none'
  if (status.includes('(unhealthy)')) return 'unhealthy'
  if (status.includes('(healthy)')) return 'healthy'
  if (status.includes('(health: starting)')) return 'starting'
  return 'none'
}

function managed(id: string, name: string, image: string, labels: Record<string, string>, state: ContainerState, health: ContainerHealth): ManagedContainer {
  return {
    id,
    name: name.replace(/^\//, ''),
    nodeId: labels[LABELS.node] ?? '',
    service: labels[LABELS.service] ?? '',
    image,
    digest: labels[LABELS.digest] ?? null,
    version: labels[LABELS.version] ?? null,
    specHash: labels[LABELS.spec] ?? null,
    critical: labels[LABELS.critical] === 'true',
    state,
    health,
    labels,
  }
}

const seconds = (s: number | undefined) => (s === undefined ? undefined : Math.round(s * 1e9))

/** Docker's engine through dockerode (lazily imported: `jil --version` never pays for it). */
export class DockerRuntime implements Runtime {
  private constructor(
    private readonly docker: Dockerode,
    private readonly where: string,
  ) {}

  /** `unix:///path/docker.sock`, `tcp://host:port`, or undefined for /var/run/docker.sock. */
  static async connect(dockerHost: string | undefined): Promise<DockerRuntime> {
    const {default: Docker} = await import('dockerode')
    let opts: Dockerode.DockerOptions
    let where: string
    if (!dockerHost) {
      opts = {socketPath: '/var/run/docker.sock'}
      where = 'unix:///var/run/docker.sock'
    } else if (dockerHost.startsWith('unix://')) {
      opts = {socketPath: dockerHost.slice('unix://'.length)}
      where = dockerHost
    } else {
      const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(dockerHost)
      if (!m) throw new JilError('DOCKER_HOST_INVALID', `docker host ${JSON.stringify(dockerHost)} is not unix:///PATH or tcp://HOST:PORT`, {hint: 'set JIL_DOCKER_HOST (or DOCKER_HOST)', exit: 2})
      opts = {host: m[1]!, port: Number(m[2]), protocol: 'http'}
      where = dockerHost
    }
    return new DockerRuntime(new Docker(opts), where)
  }

  private fail(err: unknown, what: string): JilError {
    if (err instanceof JilError) return err
    const code = systemCode(err)
    if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EACCES') {
      return new JilError('DOCKER_UNREACHABLE', `cannot reach the Docker engine at ${this.where} (${code})`, {hint: 'check that dockerd runs and JIL_DOCKER_HOST (or DOCKER_HOST) points to it', cause: err})
    }
    const status = (err as {statusCode?: number}).statusCode
    const message = (err as {json?: {message?: string}}).json?.message ?? messageOf(err)
    return new JilError(status === 404 ? 'DOCKER_NOT_FOUND' : 'DOCKER_ERROR', `${what}: ${message}`, {hint: 'see the Docker engine log', cause: err})
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw this.fail(err, what)
    }
  }

  private api: Promise<number> | undefined

  /** The engine's API version as a number (1.41, 1.43…), asked once. */
  private apiVersion(): Promise<number> {
    this.api ??= this.call('version', () => this.docker.version()).then((v) => Number(v.ApiVersion) || 0)
    return this.api
  }

  async ping(): Promise<void> {
    await this.call('ping', () => this.docker.ping())
  }

  async list(nodeId: string): Promise<ManagedContainer[]> {
    const rows = await this.call('list containers', () => this.docker.listContainers({all: true, filters: {label: [`${LABELS.node}=${nodeId}`]}}))
    return rows.map((c) => managed(c.Id, c.Names[0] ?? c.Id, c.Image, c.Labels ?? {}, stateOf(c.State), healthFromStatus(c.Status)))
  }

  async inspect(id: string): Promise<ContainerDetails> {
    const c = await this.call(`inspect ${id}`, () => this.docker.getContainer(id).inspect())
    const h = c.State.Health?.Status
    const health: ContainerHealth = h === 'healthy' || h === 'unhealthy' || h === 'starting' ? h : 'none'
    const zero = (t: string | undefined) => (!t || t.startsWith('0001-') ? null : t)
    return {
      ...managed(c.Id, c.Name, c.Config.Image, c.Config.Labels ?? {}, stateOf(c.State.Status), health),
      user: c.Config.User ?? '',
      startedAt: zero(c.State.StartedAt),
      finishedAt: zero(c.State.FinishedAt),
      exitCode: c.State.Running ? null : c.State.ExitCode,
      restartCount: c.RestartCount ?? 0,
    }
  }

  async hasImage(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect()
      return true
    } catch (err) {
      if ((err as {statusCode?: number}).statusCode === 404) return false
      throw this.fail(err, `inspect image ${ref}`)
    }
  }

  async pull(repository: string, digest: string, registryToken?: string): Promise<void> {
    const ref = `${repository}@${digest}`
    const stream = await this.call(`pull ${ref}`, () => this.docker.pull(ref, registryToken ? {authconfig: {registrytoken: registryToken}} : {}))
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null, events: {error?: string; errorDetail?: {message?: string}}[]) => {
          const failed = err ?? events.find((e) => e.error)
          if (!failed) return resolve()
          const message = failed instanceof Error ? failed.message : (failed.errorDetail?.message ?? failed.error ?? 'failed')
          reject(new JilError('PULL_FAILED', `pulling ${ref} failed: ${message}`, {hint: 'check the registry and the node’s pull token (HQ /v1/registry/token)'}))
        },
      )
    })
  }

  async create(nodeId: string, s: DesiredService, name: string): Promise<string> {
    const exposed: Record<string, object> = {}
    const bindings: Record<string, {HostIp?: string; HostPort: string}[]> = {}
    for (const p of s.ports ?? []) {
      const [spec, proto = 'tcp'] = p.split('/')
      const parts = spec!.split(':')
      const container = parts.pop()!
      const hostPort = parts.pop()!
      const hostIp = parts.pop()
      const key = `${container}/${proto}`
      exposed[key] = {}
      ;(bindings[key] ??= []).push({...(hostIp ? {HostIp: hostIp} : {}), HostPort: hostPort})
    }
    const labels = serviceLabels(nodeId, s)
    for (const m of s.mounts ?? []) {
      // Named volumes are created with the node's label, so maintenance prunes only this node's.
      if (m.type === 'volume' && m.source) {
        await this.call(`create volume ${m.source}`, () => this.docker.createVolume({Name: m.source, Labels: {[LABELS.node]: nodeId}}))
      }
    }
    const c = await this.call(`create ${name}`, () =>
      this.docker.createContainer({
        name,
        Image: `${s.repository}@${s.digest}`,
        ...(s.command ? {Cmd: s.command} : {}),
        Env: Object.entries(s.env ?? {}).map(([k, v]) => `${k}=${v}`),
        ...(s.user ? {User: s.user} : {}),
        Labels: labels,
        ExposedPorts: exposed,
        ...(s.stop_timeout_s !== undefined ? {StopTimeout: s.stop_timeout_s} : {}),
        ...(s.health
          ? {
              Healthcheck: {
                Test: s.health.test,
                Interval: seconds(s.health.interval_s ?? 30),
                Timeout: seconds(s.health.timeout_s ?? 10),
                Retries: s.health.retries ?? 3,
                StartPeriod: seconds(s.health.start_period_s ?? 0),
              },
            }
          : {}),
        HostConfig: {
          // An init as PID 1 forwards SIGTERM (a bare `sleep` as PID 1 ignores it: DESIGN.md §9).
          Init: true,
          ...(s.network ? {NetworkMode: s.network} : {}),
          PortBindings: bindings,
          Mounts: (s.mounts ?? []).map((m) => ({Type: m.type, Source: m.source, Target: m.target, ReadOnly: m.read_only ?? false})),
          // The health agent owns restarts (with a budget, so a crash loop is reported, not hammered).
          RestartPolicy: {Name: 'no'},
        },
      }),
    )
    return c.id
  }

  async start(id: string): Promise<void> {
    await this.call(`start ${id}`, async () => {
      try {
        await this.docker.getContainer(id).start()
      } catch (err) {
        if ((err as {statusCode?: number}).statusCode !== 304) throw err // 304: already running
      }
    })
  }

  async stop(id: string, timeoutS?: number): Promise<void> {
    await this.call(`stop ${id}`, async () => {
      try {
        await this.docker.getContainer(id).stop(timeoutS === undefined ? {} : {t: timeoutS})
      } catch (err) {
        if ((err as {statusCode?: number}).statusCode !== 304) throw err // 304: already stopped
      }
    })
  }

  async restart(id: string, timeoutS?: number): Promise<void> {
    await this.call(`restart ${id}`, () => this.docker.getContainer(id).restart(timeoutS === undefined ? {} : {t: timeoutS}))
  }

  async remove(id: string): Promise<void> {
    await this.call(`remove ${id}`, async () => {
      try {
        await this.docker.getContainer(id).remove({force: true, v: false})
      } catch (err) {
        if ((err as {statusCode?: number}).statusCode !== 404) throw err
      }
    })
  }

  async rename(id: string, name: string): Promise<void> {
    await this.call(`rename ${id}`, () => this.docker.getContainer(id).rename({name}))
  }

  async pruneImages(keep: readonly string[]): Promise<PruneResult> {
    const keepSet = new Set(keep)
    const images = await this.call('list images', () => this.docker.listImages({filters: {dangling: ['true']}}))
    const out: PruneResult = {deleted: [], reclaimed_bytes: 0}
    for (const img of images) {
      if (img.Labels?.[LABELS.keep] === 'true') continue
      if ((img.RepoDigests ?? []).some((d) => keepSet.has(d.slice(d.indexOf('@') + 1)))) continue
      try {
        // Without force: the engine refuses an image a container uses (409), which is then kept.
        await this.docker.getImage(img.Id).remove({noprune: false})
        out.deleted.push(img.Id)
        out.reclaimed_bytes += img.Size ?? 0
      } catch (err) {
        const status = (err as {statusCode?: number}).statusCode
        if (status === 409 || status === 404) continue
        throw this.fail(err, `remove image ${img.Id}`)
      }
    }
    return out
  }

  async pruneVolumes(nodeId: string): Promise<PruneResult> {
    // API 1.42 (Docker 23) prunes only anonymous volumes unless `all`; 1.41 (Debian's 20.10) refuses the filter.
    const all: Record<string, string[]> = (await this.apiVersion()) >= 1.42 ? {all: ['true']} : {}
    const r = await this.call('prune volumes', () =>
      this.docker.pruneVolumes({filters: {label: [`${LABELS.node}=${nodeId}`], 'label!': [`${LABELS.keep}=true`], ...all}}),
    )
    return {deleted: r.VolumesDeleted ?? [], reclaimed_bytes: r.SpaceReclaimed ?? 0}
  }
}
