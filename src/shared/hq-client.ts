import type {Dispatcher} from 'undici'

import type {AgentReport, AuditPage, ConsistencyProof, FleetNode, Health, Heartbeat, InclusionProof, NodeRevocation, Problem, WhoAmI} from './api.js'
import type {CommandResult, CommandStatus, CommandTarget, FleetCommand, FleetNodeDetail, NodeCommand, NodeCommandName, RunModeAction, RunModeChange} from './api.js'
import type {RollbackPlan, RollbackRequest, RolloutAction, RolloutPlan, RolloutView, UpgradeRequest} from './api.js'
import type {ConfigListing, ConfigPushRequest, ConfigPushResult} from './api.js'
import type {AlertQuery, AlertView, SilenceRequest, SilenceView} from './alerts.js'
import type {DeliveryQuery, DeliveryView, WebhookAddRequest, WebhookView} from './webhooks.js'
import type {Checkpoint} from './audit.js'
import {JilError, messageOf, systemCode} from './errors.js'
import {FLEET_EVENT_TYPES, FLEET_EVENTS_KEEPALIVE_MS, type FleetEvent, type FleetEventType} from './fleet-events.js'
import type {ImageManifest} from './manifest.js'
import type {ServedKey} from './signing-keys.js'
import type {DesiredState, StackRecord, StackSpec} from './stack.js'
import type {UserSignature} from './user-signature.js'
import {zoneToPath} from './zones.js'

/** A track's stack and the version each service runs on it (GET /v1/stacks/:track). */
export type StackView = {
  track: string
  stack: StackRecord | null
  /** service → the version nodes on the track run (devnet: newest signed; testnet/mainnet: pinned), or null. */
  versions: Record<string, {version: string; digest: string; repository: string; pinned_by: string | null; pinned_at: string | null} | null>
}

/** A live stream silent for this long (three missed keepalives) has dropped, whatever TCP says. */
const EVENTS_STALL_MS = 3 * FLEET_EVENTS_KEEPALIVE_MS

/** A client identity: the user bundle's cert/key/CA, or the node's. Without cert/key: anonymous (node join). */
export type ClientIdentity = {cert?: string; key?: string; ca: string}

/** An HQ error answer: its problem+json as a JilError with HQ's code and hint. */
function problemError(status: number, type: string, text: string, what: string): JilError {
  if (type.includes('json')) {
    let p: Partial<Problem> | undefined
    try {
      p = JSON.parse(text) as Partial<Problem>
    } catch {
      p = undefined
    }
    if (p && typeof p.code === 'string') {
      const details = {...(p.field ? {field: p.field} : {}), ...(p.permission ? {permission: p.permission} : {})}
      return new JilError(p.code, p.detail ?? p.title ?? `HQ answered ${status}`, {status, ...(p.hint ? {hint: p.hint} : {}), ...(Object.keys(details).length ? {details} : {})})
    }
  }
  return new JilError('HQ_ERROR', `HQ answered ${status} to ${what}`, {status, hint: 'see the HQ log'})
}

/** One SSE message as a FleetEvent; undefined for a type this client does not know (a newer HQ). */
function parseEvent(event: string, data: string): FleetEvent | undefined {
  if (!(FLEET_EVENT_TYPES as readonly string[]).includes(event)) return undefined
  let e: FleetEvent
  try {
    e = JSON.parse(data) as FleetEvent
  } catch {
    throw new JilError('HQ_ERROR', `HQ sent a ${event} event that is not JSON`, {hint: 'check that --hq points to a jil HQ of this version'})
  }
  if (e?.type !== event) throw new JilError('HQ_ERROR', `HQ sent a ${event} event whose data says ${JSON.stringify(e?.type)}`, {hint: 'check that --hq points to a jil HQ of this version'})
  return e
}

const TLS_UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
])

/**
 * The one HQ client (DESIGN.md §2): undici over mutual TLS, typed by the wire schemas. The CLI,
 * `jil top` and the node daemon each use it with their own identity.
 */
export class HqClient {
  private constructor(
    readonly baseUrl: string,
    private readonly dispatcher: Dispatcher,
    private readonly undici: typeof import('undici'),
  ) {}

  static async connect(url: string, identity: ClientIdentity): Promise<HqClient> {
    let base: URL
    try {
      base = new URL(url)
    } catch {
      throw new JilError('HQ_URL_INVALID', `${JSON.stringify(url)} is not a URL`, {hint: 'pass --hq https://HOST:PORT (or set JIL_HQ_URL)', exit: 2})
    }
    if (base.protocol !== 'https:') throw new JilError('HQ_URL_INVALID', `HQ URL ${url} is not https`, {hint: 'HQ only speaks HTTPS: pass --hq https://HOST:PORT', exit: 2})
    const undici = await import('undici')
    const dispatcher = new undici.Agent({
      connect: {...(identity.cert && identity.key ? {cert: identity.cert, key: identity.key} : {}), ca: identity.ca, rejectUnauthorized: true},
      keepAliveTimeout: 60_000,
      connectTimeout: 10_000,
    })
    return new HqClient(base.origin, dispatcher, undici)
  }

  /** Sends a request; a problem+json answer becomes a JilError with HQ's code and hint. */
  async request<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown, opts: {signal?: AbortSignal} = {}): Promise<T> {
    let res: Dispatcher.ResponseData
    try {
      res = await this.undici.request(this.baseUrl + path, {
        method,
        dispatcher: this.dispatcher,
        headers: body === undefined ? {accept: 'application/json'} : {accept: 'application/json', 'content-type': 'application/json'},
        ...(body === undefined ? {} : {body: JSON.stringify(body)}),
        headersTimeout: 30_000,
        bodyTimeout: 30_000,
        ...(opts.signal ? {signal: opts.signal} : {}),
      })
    } catch (err) {
      if (opts.signal?.aborted) throw new JilError('ABORTED', `${method} ${path} was cancelled`, {cause: err})
      throw this.transportError(err)
    }
    const text = await res.body.text()
    const type = String(res.headers['content-type'] ?? '')
    if (res.statusCode >= 400) {
      if (type.includes('json')) {
        let p: Partial<Problem> | undefined
        try {
          p = JSON.parse(text) as Partial<Problem>
        } catch {
          p = undefined
        }
        if (p && typeof p.code === 'string') {
          const details = {...(p.field ? {field: p.field} : {}), ...(p.permission ? {permission: p.permission} : {})}
          throw new JilError(p.code, p.detail ?? p.title ?? `HQ answered ${res.statusCode}`, {status: res.statusCode, ...(p.hint ? {hint: p.hint} : {}), ...(Object.keys(details).length ? {details} : {})})
        }
      }
      throw new JilError('HQ_ERROR', `HQ answered ${res.statusCode} to ${method} ${path}`, {status: res.statusCode, hint: 'see the HQ log'})
    }
    if (!type.includes('json')) return text as T
    try {
      return JSON.parse(text) as T
    } catch {
      throw new JilError('HQ_ERROR', `HQ sent invalid JSON for ${method} ${path}`, {hint: 'check that --hq points to a jil HQ'})
    }
  }

  /** Streams an NDJSON response line by line (the audit export). */
  async *lines(path: string): AsyncGenerator<string> {
    let res: Dispatcher.ResponseData
    try {
      res = await this.undici.request(this.baseUrl + path, {method: 'GET', dispatcher: this.dispatcher, headers: {accept: 'application/x-ndjson'}, headersTimeout: 30_000, bodyTimeout: 60_000})
    } catch (err) {
      throw this.transportError(err)
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text()
      let p: Partial<Problem> = {}
      try {
        p = JSON.parse(text) as Partial<Problem>
      } catch {
        // not problem+json
      }
      throw new JilError(p.code ?? 'HQ_ERROR', p.detail ?? `HQ answered ${res.statusCode} to GET ${path}`, {status: res.statusCode, ...(p.hint ? {hint: p.hint} : {})})
    }
    let rest = ''
    const decoder = new TextDecoder()
    for await (const chunk of res.body) {
      rest += decoder.decode(chunk as Uint8Array, {stream: true})
      let i: number
      while ((i = rest.indexOf('\n')) >= 0) {
        yield rest.slice(0, i)
        rest = rest.slice(i + 1)
      }
    }
    if (rest) yield rest
  }

  /**
   * The live fleet stream (`GET /v1/events`, server-sent events): `ready` first, then the events as
   * HQ sends them. No reconnect in here: the caller (jil top's data hook) owns reconnect, backoff and
   * the stale marker. Ends when HQ ends the stream (it shuts down) or `signal` aborts; throws a
   * JilError (EVENTS_DROPPED) when the stream breaks or goes silent. `types` narrows it (`ready` always comes).
   */
  async *events(opts: {signal: AbortSignal; types?: readonly FleetEventType[]}): AsyncGenerator<FleetEvent, void, undefined> {
    const types = opts.types?.filter((t) => t !== 'ready') ?? []
    const path = `/v1/events${types.length ? `?types=${types.join(',')}` : ''}`
    let res: Dispatcher.ResponseData
    try {
      res = await this.undici.request(this.baseUrl + path, {
        method: 'GET',
        dispatcher: this.dispatcher,
        headers: {accept: 'text/event-stream'},
        headersTimeout: 30_000,
        bodyTimeout: EVENTS_STALL_MS,
        signal: opts.signal,
      })
    } catch (err) {
      if (opts.signal.aborted) return
      throw this.transportError(err)
    }
    const type = String(res.headers['content-type'] ?? '')
    if (res.statusCode >= 400) throw problemError(res.statusCode, type, await res.body.text(), `GET ${path}`)
    if (!type.startsWith('text/event-stream')) {
      res.body.destroy()
      throw new JilError('HQ_ERROR', `HQ answered GET ${path} with ${type || 'no content type'}, not an event stream`, {hint: 'check that --hq points to a jil HQ'})
    }
    const decoder = new TextDecoder()
    let rest = ''
    let event = ''
    let data: string[] = []
    try {
      for await (const chunk of res.body) {
        rest += decoder.decode(chunk as Uint8Array, {stream: true})
        let i: number
        while ((i = rest.indexOf('\n')) >= 0) {
          const line = rest.endsWith('\r', i) ? rest.slice(0, i - 1) : rest.slice(0, i)
          rest = rest.slice(i + 1)
          if (line === '') {
            // A blank line ends a message; comments (keepalives) and unknown types are passed over.
            const e = data.length ? parseEvent(event, data.join('\n')) : undefined
            event = ''
            data = []
            if (e) yield e
          } else if (!line.startsWith(':')) {
            const colon = line.indexOf(':')
            const field = colon < 0 ? line : line.slice(0, colon)
            const value = colon < 0 ? '' : line.slice(colon + (line[colon + 1] === ' ' ? 2 : 1))
            if (field === 'event') event = value
            else if (field === 'data') data.push(value)
          }
        }
      }
    } catch (err) {
      if (opts.signal.aborted) return
      if (err instanceof JilError) throw err
      const code = systemCode(err) ?? (err as {code?: string}).code
      const silent = code === 'UND_ERR_BODY_TIMEOUT'
      throw new JilError('EVENTS_DROPPED', silent ? `the live stream from HQ at ${this.baseUrl} went silent for ${EVENTS_STALL_MS / 1000} s` : `the live stream from HQ at ${this.baseUrl} dropped (${code ?? messageOf(err)})`, {
        status: 503,
        hint: 'connect again and reload (HQ may have restarted, or dropped a client that fell behind)',
        cause: err,
      })
    } finally {
      // The consumer may stop early (break, return): let go of the connection.
      res.body.destroy()
    }
  }

  auditPage(query: Record<string, string | number | undefined>): Promise<AuditPage> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))
    return this.request<AuditPage>('GET', `/v1/fleet/audit?${qs}`)
  }

  latestCheckpoint(): Promise<Checkpoint> {
    return this.request<Checkpoint>('GET', '/v1/audit/checkpoint')
  }

  signCheckpoint(): Promise<Checkpoint> {
    return this.request<Checkpoint>('POST', '/v1/audit/checkpoint', {})
  }

  inclusionProof(seq: number, size?: number): Promise<InclusionProof> {
    return this.request<InclusionProof>('GET', `/v1/audit/proof/${seq}${size ? `?size=${size}` : ''}`)
  }

  consistencyProof(from: number, to: number): Promise<ConsistencyProof> {
    return this.request<ConsistencyProof>('GET', `/v1/audit/consistency?from=${from}&to=${to}`)
  }

  // ---- node-facing (the daemon's calls, with the node's own certificate)

  desiredState(): Promise<DesiredState> {
    return this.request<DesiredState>('GET', '/v1/node/desired-state')
  }

  heartbeat(hb: Heartbeat): Promise<{received_at: string}> {
    return this.request('POST', '/v1/node/heartbeat', hb)
  }

  report(r: AgentReport): Promise<{received_at: string}> {
    return this.request('POST', '/v1/node/reports', r)
  }

  manifests(digest: string): Promise<{manifests: ImageManifest[]; keys: ServedKey[]}> {
    return this.request('GET', `/v1/images/${encodeURIComponent(digest)}/manifests`)
  }

  signingKeys(): Promise<{current: string; keys: ServedKey[]}> {
    return this.request('GET', '/v1/keys')
  }

  /** A short-lived registry pull token for these repositories (image names, e.g. jil/api). */
  registryToken(repositories: string[]): Promise<{token: string; expires_in: number}> {
    const qs = new URLSearchParams([['service', 'jil-registry'], ...repositories.map((r) => ['scope', `repository:${r}:pull`] as [string, string])])
    return this.request('GET', `/v1/registry/token?${qs}`)
  }

  /** HQ's CRL, PEM (signed by the CA: verify it before use). */
  crlPem(): Promise<string> {
    return this.request<string>('GET', '/v1/ca/crl?format=pem')
  }

  /** The node's open commands; with `wait`, HQ holds the request up to that many seconds (≤ 25) until one arrives. */
  nodeCommands(waitS = 0, signal?: AbortSignal): Promise<{commands: NodeCommand[]}> {
    return this.request('GET', `/v1/node/commands?wait=${Math.max(0, Math.floor(waitS))}`, undefined, signal ? {signal} : {})
  }

  commandResult(id: string, result: CommandResult): Promise<{id: string; status: CommandStatus; recorded: boolean}> {
    return this.request('POST', `/v1/node/commands/${encodeURIComponent(id)}/result`, result)
  }

  // ---- commands and run-mode actions (users)

  sendCommand(command: NodeCommandName, target: CommandTarget): Promise<{command: NodeCommandName; target: string; commands: FleetCommand[]}> {
    return this.request('POST', '/v1/fleet/commands', {command, target})
  }

  fleetCommands(query: {node?: string; status?: CommandStatus; limit?: number} = {}): Promise<{commands: FleetCommand[]}> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))
    return this.request('GET', `/v1/fleet/commands${qs.size ? `?${qs}` : ''}`)
  }

  fleetCommand(id: string): Promise<FleetCommand> {
    return this.request('GET', `/v1/fleet/commands/${encodeURIComponent(id)}`)
  }

  /** One node as HQ sees it: status, last reports, desired vs applied (GET /v1/fleet/nodes/:id). */
  fleetNode(id: string): Promise<FleetNodeDetail> {
    return this.request('GET', `/v1/fleet/nodes/${encodeURIComponent(id)}`)
  }

  runModeAction(nodeId: string, action: RunModeAction): Promise<RunModeChange> {
    return this.request('POST', `/v1/fleet/nodes/${encodeURIComponent(nodeId)}/${action}`, {})
  }

  // ---- rollouts and rollbacks (users)

  /** Starts a rollout (or, with dry_run, plans one) to a node or every testnet/mainnet node of a zone. */
  upgrade(target: {node: string} | {zone: string}, body: UpgradeRequest): Promise<RolloutView | RolloutPlan> {
    const path = 'node' in target ? `/v1/fleet/nodes/${encodeURIComponent(target.node)}/upgrade` : `/v1/fleet/jurisdictions/${encodeURIComponent(zoneToPath(target.zone))}/upgrade`
    return this.request('POST', path, body)
  }

  rollbackNode(nodeId: string, body: RollbackRequest): Promise<RollbackPlan> {
    return this.request('POST', `/v1/fleet/nodes/${encodeURIComponent(nodeId)}/rollback`, body)
  }

  rollouts(query: {open?: boolean; limit?: number} = {}): Promise<{rollouts: RolloutView[]}> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))
    return this.request('GET', `/v1/fleet/rollouts${qs.size ? `?${qs}` : ''}`)
  }

  rollout(id: string): Promise<RolloutView> {
    return this.request('GET', `/v1/fleet/rollouts/${encodeURIComponent(id)}`)
  }

  rolloutAction(id: string, action: RolloutAction): Promise<RolloutView> {
    return this.request('POST', `/v1/fleet/rollouts/${encodeURIComponent(id)}/${action}`, {})
  }

  // ---- stacks and fleet (users)

  stack(track: string): Promise<StackView> {
    return this.request('GET', `/v1/stacks/${encodeURIComponent(track)}`)
  }

  setStack(track: string, spec: StackSpec): Promise<StackRecord> {
    return this.request('PUT', `/v1/stacks/${encodeURIComponent(track)}`, {spec})
  }

  pinStack(track: string, body: {service: string; version: string; rollback?: UserSignature}): Promise<StackView> {
    return this.request('POST', `/v1/stacks/${encodeURIComponent(track)}/pins`, body)
  }

  /** Revokes a node: its certificates are locked out at once, for good (DELETE /v1/fleet/nodes/:id). */
  revokeNode(nodeId: string, reason: string): Promise<NodeRevocation> {
    return this.request('DELETE', `/v1/fleet/nodes/${encodeURIComponent(nodeId)}`, {reason})
  }

  /** Promotes a signed image to the next track: a new manifest over the same digest. */
  promoteImage(digest: string, to: 'testnet' | 'mainnet', o: {allowDowngrade?: boolean} = {}): Promise<ImageManifest> {
    return this.request('POST', `/v1/images/${digest}/promote`, {to, ...(o.allowDowngrade ? {allow_downgrade: true} : {})})
  }

  fleetNodes(query: {zone?: string; status?: string; version?: string} = {}): Promise<{nodes: FleetNode[]}> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined) as [string, string][])
    return this.request('GET', `/v1/fleet/nodes${qs.size ? `?${qs}` : ''}`)
  }

  whoami(): Promise<WhoAmI> {
    return this.request<WhoAmI>('GET', '/v1/whoami')
  }

  health(): Promise<Health> {
    return this.request<Health>('GET', '/v1/health')
  }

  // ---- alerts (users)

  alerts(query: AlertQuery = {}): Promise<{alerts: AlertView[]}> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))
    return this.request('GET', `/v1/alerts${qs.size ? `?${qs}` : ''}`)
  }

  ackAlert(id: string): Promise<AlertView> {
    return this.request('POST', `/v1/alerts/${encodeURIComponent(id)}/ack`, {})
  }

  silenceAlerts(body: SilenceRequest): Promise<SilenceView> {
    return this.request('POST', '/v1/alerts/silences', body)
  }

  alertSilences(query: {all?: boolean} = {}): Promise<{silences: SilenceView[]}> {
    return this.request('GET', `/v1/alerts/silences${query.all ? '?all=true' : ''}`)
  }

  unsilenceAlerts(id: string): Promise<SilenceView> {
    return this.request('DELETE', `/v1/alerts/silences/${encodeURIComponent(id)}`)
  }

  // ---- config push (users)

  /** Pushes the next version of a config document to a zone (CH/FINMA) or one node. */
  configPush(target: {zone: string} | {node: string}, body: ConfigPushRequest): Promise<ConfigPushResult> {
    const path = 'node' in target ? `/v1/fleet/nodes/${encodeURIComponent(target.node)}/config` : `/v1/fleet/jurisdictions/${encodeURIComponent(zoneToPath(target.zone))}/config`
    return this.request('POST', path, body)
  }

  /** A zone's current config documents, or a node's effective ones. */
  configList(target: {zone: string} | {node: string}): Promise<ConfigListing> {
    const qs = new URLSearchParams('node' in target ? {node: target.node} : {zone: zoneToPath(target.zone)})
    return this.request('GET', `/v1/fleet/config?${qs}`)
  }

  // ---- alert webhooks (users)

  webhooks(): Promise<{webhooks: WebhookView[]}> {
    return this.request('GET', '/v1/alerts/webhooks')
  }

  addWebhook(body: WebhookAddRequest): Promise<WebhookView> {
    return this.request('POST', '/v1/alerts/webhooks', body)
  }

  removeWebhook(id: string): Promise<WebhookView> {
    return this.request('DELETE', `/v1/alerts/webhooks/${encodeURIComponent(id)}`)
  }

  testWebhook(id: string): Promise<DeliveryView> {
    return this.request('POST', `/v1/alerts/webhooks/${encodeURIComponent(id)}/test`, {})
  }

  webhookDeliveries(query: DeliveryQuery = {}): Promise<{deliveries: DeliveryView[]}> {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))
    return this.request('GET', `/v1/alerts/webhooks/deliveries${qs.size ? `?${qs}` : ''}`)
  }

  webhookDelivery(id: string): Promise<DeliveryView> {
    return this.request('GET', `/v1/alerts/webhooks/deliveries/${encodeURIComponent(id)}`)
  }

  async close(): Promise<void> {
    await this.dispatcher.close()
  }

  private transportError(err: unknown): JilError {
    const code = systemCode(err) ?? (err as {code?: string}).code
    const where = this.baseUrl
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      return new JilError('HQ_UNREACHABLE', `cannot reach HQ at ${where} (${code})`, {hint: 'check that HQ runs (jil hq serve) and the --hq URL (JIL_HQ_URL)', cause: err})
    }
    if (code && TLS_UNTRUSTED.has(code)) {
      return new JilError('HQ_UNTRUSTED', `HQ at ${where} presented a certificate your bundle does not trust (${code})`, {
        hint: 'check the --hq URL points to the HQ that issued your bundle',
        cause: err,
      })
    }
    if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') {
      return new JilError('HQ_CLOSED', `HQ at ${where} closed the connection (${code})`, {hint: 'your certificate may be refused by HQ; check it is current (jil hq whoami)', cause: err})
    }
    return new JilError('HQ_UNREACHABLE', `request to HQ at ${where} failed: ${messageOf(err)}`, {hint: 'check the --hq URL and the network', cause: err})
  }
}
