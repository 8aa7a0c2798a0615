import {createServer, type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'

import type {Clock} from '../shared/clock.js'
import {JilError, messageOf, systemCode} from '../shared/errors.js'
import type {RunMode} from '../shared/stack.js'
import type {NodeIdentity} from '../node/identity.js'
import type {ContainerState, Runtime} from '../node/runtime.js'
import {readAppliedDesiredState} from '../node/state.js'

/**
 * What the geo load balancer routes on (`GET /healthz`): a node serves traffic only when it is
 * active (its identity loads, its certificate is current and HQ did not refuse it), its run mode is
 * neither paused nor stopped, and every critical service has a running container that is not
 * unhealthy. Anything else is 503 with the reasons, so an operator sees why from the same answer.
 */

export type HealthReason = {code: string; message: string; service?: string}

export type ServiceHealth = {name: string; state: ContainerState | 'missing'; health: string; up: boolean}

export type NodeHealth = {
  status: 'ok' | 'unavailable'
  node_id: string
  checked_at: string
  run_mode: RunMode | null
  cert_not_after: string | null
  /** The critical services and whether each counts as up. */
  critical: ServiceHealth[]
  /** Event sync, when the node runs it. */
  sync?: {caught_up: boolean; lag_s: number}
  /** The node's containers by state (every jil-labelled container of this node); null when the engine did not answer. */
  containers: Record<ContainerState, number> | null
  reasons: HealthReason[]
}

/** The last refusal of this node's certificate by HQ (CERT_REVOKED, CERT_EXPIRED), with the serial it was about. */
export type HqRefusal = {code: string; message: string; serial: string}

/** HQ's answers that mean this node is out of the fleet (DESIGN.md §4). */
export const REFUSAL_CODES: ReadonlySet<string> = new Set(['CERT_REVOKED', 'CERT_EXPIRED'])

export type HealthProbeOptions = {
  stateDir: string
  nodeId: string
  clock: Clock
  identity: () => Promise<NodeIdentity>
  runtime: () => Promise<Runtime>
  hqRefusal: () => HqRefusal | undefined
  /** Extra reasons of the daemon itself (stopping). */
  extra?: () => HealthReason[]
  /** Event sync, when the node runs it: not ready until caught up (the seed's "catches up, then Cloudflare routes to it"). */
  sync?: () => {caught_up: boolean; lag_s: number; error?: string}
  /** An answer is reused this long (a load balancer polling every second must not hammer the engine). */
  cacheMs?: number
}

const STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']

function codeOf(err: unknown, fallback: string): string {
  return err instanceof JilError ? err.code : (systemCode(err) ?? fallback)
}

/** Evaluates the node's health once. */
export async function checkNodeHealth(o: Omit<HealthProbeOptions, 'cacheMs'>): Promise<NodeHealth> {
  const now = o.clock.now()
  const reasons: HealthReason[] = []
  let certNotAfter: string | null = null

  try {
    const id = await o.identity()
    certNotAfter = id.cert.notAfter.toISOString()
    if (now.getTime() >= id.cert.notAfter.getTime()) {
      reasons.push({code: 'CERT_EXPIRED', message: `the node certificate expired at ${certNotAfter}`})
    }
    const refusal = o.hqRefusal()
    // A refusal is about one certificate: after a rejoin under a new certificate it no longer holds.
    if (refusal && refusal.serial === id.cert.serial) reasons.push({code: refusal.code, message: `HQ refused the node certificate: ${refusal.message}`})
  } catch (err) {
    reasons.push({code: codeOf(err, 'IDENTITY_UNREADABLE'), message: `the node identity does not load: ${messageOf(err)}`})
  }

  let runMode: RunMode | null = null
  let desired: Awaited<ReturnType<typeof readAppliedDesiredState>>
  try {
    desired = await readAppliedDesiredState(o.stateDir)
    // No document yet: a node that has never been told otherwise runs.
    runMode = desired?.run_mode ?? 'running'
    if (runMode !== 'running') reasons.push({code: runMode === 'paused' ? 'NODE_PAUSED' : 'NODE_STOPPED', message: `the node's run mode is ${runMode}`})
  } catch (err) {
    reasons.push({code: codeOf(err, 'STATE_UNREADABLE'), message: `the applied desired state does not load: ${messageOf(err)}`})
  }

  let containers: NodeHealth['containers'] = null
  const critical: ServiceHealth[] = []
  try {
    const list = await (await o.runtime()).list(o.nodeId)
    containers = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<ContainerState, number>
    for (const c of list) containers[c.state]++
    const names = new Set<string>()
    for (const c of list) if (c.critical && c.service) names.add(c.service)
    for (const s of desired?.services ?? []) if (s.critical) names.add(s.name)
    for (const name of [...names].sort()) {
      const mine = list.filter((c) => c.service === name)
      const best = mine.find((c) => c.state === 'running' && c.health !== 'unhealthy') ?? mine.find((c) => c.state === 'running') ?? mine[0]
      const up = best !== undefined && best.state === 'running' && best.health !== 'unhealthy'
      critical.push({name, state: best?.state ?? 'missing', health: best?.health ?? 'none', up})
      if (up) continue
      const why = !best ? 'has no container' : best.state === 'running' ? 'is unhealthy' : `is ${best.state}`
      reasons.push({code: best?.state === 'running' ? 'SERVICE_UNHEALTHY' : 'SERVICE_DOWN', message: `critical service ${name} ${why}`, service: name})
    }
  } catch (err) {
    reasons.push({code: codeOf(err, 'DOCKER_ERROR'), message: `the container engine did not answer: ${messageOf(err)}`})
  }

  const sync = o.sync?.()
  if (sync && !sync.caught_up) {
    reasons.push({code: 'SYNC_CATCHING_UP', message: sync.error ? `event sync is not running: ${sync.error}` : `event sync is catching up (${sync.lag_s} s behind)`})
  }

  reasons.push(...(o.extra?.() ?? []))
  return {
    status: reasons.length === 0 ? 'ok' : 'unavailable',
    node_id: o.nodeId,
    checked_at: now.toISOString(),
    run_mode: runMode,
    cert_not_after: certNotAfter,
    critical,
    containers,
    ...(sync ? {sync: {caught_up: sync.caught_up, lag_s: sync.lag_s}} : {}),
    reasons,
  }
}

/**
 * checkNodeHealth behind a cache of `cacheMs` (5 s) and a single-flight: concurrent callers share
 * one evaluation, and one engine query serves /healthz and /metrics alike.
 */
export function healthProbe(o: HealthProbeOptions): () => Promise<NodeHealth> {
  const ttl = o.cacheMs ?? 5000
  let last: {at: number; value: NodeHealth} | undefined
  let pending: Promise<NodeHealth> | undefined
  return () => {
    const now = o.clock.now().getTime()
    if (last && now - last.at < ttl && now >= last.at) return Promise.resolve(last.value)
    pending ??= checkNodeHealth(o)
      .then((value) => {
        last = {at: o.clock.now().getTime(), value}
        return value
      })
      .finally(() => {
        pending = undefined
      })
    return pending
  }
}

export type HealthzServer = {url: string; close(): Promise<void>}

export type HealthzServerOptions = {
  listen: {host: string; port: number}
  probe: () => Promise<NodeHealth>
  /** Prometheus text for /metrics. */
  metrics: () => Promise<{contentType: string; body: string}>
  log: {warn(obj: object, msg: string): void}
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body)})
  res.end(body)
}

function json(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value) + '\n')
}

/**
 * `/healthz` and `/metrics` on a plain node:http server: the daemon's memory goal (≤ 64 MiB) leaves
 * no room for a web framework, and two routes need none.
 */
export async function startHealthzServer(o: HealthzServerOptions): Promise<HealthzServer> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0]
    if (path !== '/healthz' && path !== '/metrics') return json(res, 404, {error: {code: 'NOT_FOUND', message: `no route ${path}`, hint: 'GET /healthz or /metrics'}})
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return json(res, 405, {error: {code: 'METHOD_NOT_ALLOWED', message: `${req.method} is not allowed on ${path}`, hint: 'use GET'}})
    }
    if (path === '/healthz') {
      const h = await o.probe()
      return json(res, h.status === 'ok' ? 200 : 503, h)
    }
    const m = await o.metrics()
    return send(res, 200, m.contentType, m.body)
  }
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      o.log.warn({err: messageOf(err), url: req.url}, 'healthz request failed')
      if (!res.headersSent) json(res, 500, {error: {code: 'INTERNAL', message: 'the daemon could not answer', hint: 'see the daemon log'}})
      else res.destroy()
    })
  })
  // Probes are short requests; idle keep-alive sockets must not hold the daemon open at shutdown.
  server.keepAliveTimeout = 5000
  server.requestTimeout = 30_000
  await new Promise<void>((resolve, reject) => {
    const onError = (err: unknown) => {
      const code = systemCode(err)
      reject(
        code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL'
          ? new JilError('HEALTHZ_LISTEN_FAILED', `cannot listen on ${o.listen.host}:${o.listen.port} for /healthz (${code})`, {
              hint: 'pick another address with --healthz-listen HOST:PORT (JIL_HEALTHZ_LISTEN)',
              cause: err,
            })
          : err,
      )
    }
    server.once('error', onError)
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const addr = server.address() as AddressInfo
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeIdleConnections()
      }),
  }
}
