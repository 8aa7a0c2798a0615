import {readFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {join} from 'node:path'

import {systemClock, type Clock} from '../../shared/clock.js'
import {JilError, messageOf, systemCode} from '../../shared/errors.js'

/**
 * A small OCI distribution client: what HQ needs of a registry — the manifest digest a tag points
 * at (HEAD /v2/NAME/manifests/TAG, Docker-Content-Digest), and the catalog and tags to find
 * unsigned digests. Credentials come from the usual Docker config when present; a registry that
 * answers with a Bearer challenge (the token-auth protocol, HQ being its token server) is asked
 * again with a token from the injected `tokenFor`.
 */

/** The media types a registry may answer a manifest request with (OCI and Docker, single and index). */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ')

export type ImageRef = {registry: string; repository: string; tag?: string; digest?: string}

const DIGEST = /^sha256:[0-9a-f]{64}$/

/**
 * Parses REGISTRY/NAME[:TAG|@DIGEST]. The registry is the first path component when it looks like a
 * host (has a dot or a colon, or is localhost), as Docker reads image references.
 */
export function parseImageRef(ref: string): ImageRef {
  const m = /^(?<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)+)(?::(?<tag>[\w][\w.-]{0,127}))?(?:@(?<digest>sha256:[0-9a-f]{64}))?$/.exec(ref)
  const first = ref.split('/')[0] ?? ''
  if (!m?.groups || !(first.includes('.') || first.includes(':') || first === 'localhost')) {
    throw new JilError('IMAGE_REF_INVALID', `${JSON.stringify(ref)} is not REGISTRY/NAME[:TAG|@sha256:DIGEST]`, {
      hint: 'e.g. registry.example.com/jil/settlement-api:v95.3 or 127.0.0.1:5000/jil/wallet-api@sha256:…',
      exit: 2,
    })
  }
  const name = m.groups.name!
  const registry = name.slice(0, name.indexOf('/'))
  return {registry, repository: name.slice(registry.length + 1), ...(m.groups.tag ? {tag: m.groups.tag} : {}), ...(m.groups.digest ? {digest: m.groups.digest} : {})}
}

/** Plain HTTP only for loopback registries (as dockerd allows); TLS everywhere else. */
function baseUrl(registry: string): string {
  const host = registry.replace(/:\d+$/, '')
  const loopback = host === 'localhost' || /^127\./.test(host) || host === '[::1]'
  return `${loopback ? 'http' : 'https'}://${registry}`
}

/** Basic credentials for `registry` from $DOCKER_CONFIG/config.json or ~/.docker/config.json, if any. */
export async function dockerCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const path = join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json')
  let config: {auths?: Record<string, {auth?: string}>}
  try {
    config = JSON.parse(await readFile(path, 'utf8')) as typeof config
  } catch {
    return undefined
  }
  const auth = config.auths?.[registry]?.auth ?? config.auths?.[`https://${registry}`]?.auth
  return auth ? `Basic ${auth}` : undefined
}

/**
 * Where a token for a registry's Bearer challenge comes from: HQ mints its own (RegistryTokenIssuer
 * .issueForHq), since HQ is the token server of its registry. `expires_in` in seconds.
 */
export type RegistryTokenSource = (service: string, scope: string) => Promise<{token: string; expires_in: number}> | {token: string; expires_in: number}

export type RegistryClientOptions = {
  /** Basic credentials (Docker config) sent with every request. */
  authorization?: string | undefined
  /** Answers a 401 `WWW-Authenticate: Bearer` challenge; without it such a registry is refused. */
  tokenFor?: RegistryTokenSource
  /** When cached tokens expire (default the system clock; HQ passes its own). */
  clock?: Clock
}

/** The parameters of a `Bearer realm="…",service="…",scope="…"` challenge, or undefined if it is not one. */
export function parseBearerChallenge(header: string | string[] | undefined): Record<string, string> | undefined {
  const h = Array.isArray(header) ? header.find((x) => /^\s*bearer\s/i.test(x)) : header
  const m = h ? /^\s*bearer\s+(.*)$/i.exec(h) : null
  if (!m) return undefined
  const params: Record<string, string> = {}
  for (const p of m[1]!.matchAll(/([a-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/gi)) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1')
  return params
}

/** A cached token is dropped this long before it expires, so it never reaches the registry stale. */
const TOKEN_MARGIN_S = 30

export class RegistryClient {
  private readonly authorization: string | undefined
  private readonly tokenFor: RegistryTokenSource | undefined
  private readonly clock: Clock
  /** Bearer tokens by the scope they were minted for, until shortly before they expire. */
  private readonly tokens = new Map<string, {token: string; until: number}>()

  constructor(
    private readonly registry: string,
    o: RegistryClientOptions = {},
  ) {
    this.authorization = o.authorization
    this.tokenFor = o.tokenFor
    this.clock = o.clock ?? systemClock
  }

  static async for(registry: string, o: Omit<RegistryClientOptions, 'authorization'> = {}): Promise<RegistryClient> {
    return new RegistryClient(registry, {...o, authorization: await dockerCredentials(registry)})
  }

  private cached(scope: string): string | undefined {
    const t = this.tokens.get(scope)
    if (t && t.until > this.clock.now().getTime()) return t.token
    this.tokens.delete(scope)
    return undefined
  }

  /**
   * One request; `scope` is the token scope it needs (what the registry's challenge will name), so a
   * cached token goes along at once. A 401 with a Bearer challenge gets a fresh token for the scope
   * the registry named and is retried once.
   */
  private async call(
    method: 'GET' | 'HEAD',
    path: string,
    o: {accept?: string; scope?: string; signal?: AbortSignal | undefined} = {},
  ): Promise<{status: number; headers: Record<string, string | string[] | undefined>; body: string}> {
    const bearer = o.scope && this.tokenFor ? this.cached(o.scope) : undefined
    const first = await this.send(method, path, o.accept, bearer ? `Bearer ${bearer}` : this.authorization, o.signal)
    if (first.status !== 401 || !this.tokenFor) return first
    const challenge = parseBearerChallenge(first.headers['www-authenticate'])
    if (!challenge?.service) return first
    const scope = challenge.scope ?? ''
    this.tokens.delete(scope)
    const issued = await this.tokenFor(challenge.service, scope)
    const lifeS = Math.max(0, issued.expires_in - Math.min(TOKEN_MARGIN_S, issued.expires_in / 2))
    this.tokens.set(scope, {token: issued.token, until: this.clock.now().getTime() + lifeS * 1000})
    return this.send(method, path, o.accept, `Bearer ${issued.token}`, o.signal)
  }

  private async send(method: 'GET' | 'HEAD', path: string, accept: string | undefined, authorization: string | undefined, signal: AbortSignal | undefined): Promise<{status: number; headers: Record<string, string | string[] | undefined>; body: string}> {
    const {request} = await import('undici')
    try {
      const res = await request(baseUrl(this.registry) + path, {
        method,
        headers: {...(accept ? {accept} : {}), ...(authorization ? {authorization} : {})},
        headersTimeout: 15_000,
        bodyTimeout: 30_000,
        ...(signal ? {signal} : {}),
      })
      const body = await res.body.text()
      return {status: res.statusCode, headers: res.headers, body}
    } catch (err) {
      throw new JilError('REGISTRY_UNREACHABLE', `cannot reach the registry ${this.registry}: ${systemCode(err) ?? messageOf(err)}`, {
        hint: 'check the registry address and that it runs',
        status: 502,
        cause: err,
      })
    }
  }

  /** The registry's manifest digest for a tag (or checks that a digest exists). */
  async resolve(repository: string, reference: string, signal?: AbortSignal): Promise<string> {
    const r = await this.call('HEAD', `/v2/${repository}/manifests/${reference}`, {accept: MANIFEST_ACCEPT, scope: pullScope(repository), signal})
    if (r.status === 404) throw new JilError('IMAGE_NOT_FOUND', `${this.registry}/${repository}:${reference} is not in the registry`, {status: 404, hint: 'push the image first, or check the name and tag'})
    if (r.status === 401 || r.status === 403) throw new JilError('REGISTRY_DENIED', `the registry refused access to ${repository} (${r.status})`, {status: 502, hint: 'log in with docker login, or check the registry\'s token service'})
    if (r.status !== 200) throw new JilError('REGISTRY_ERROR', `the registry answered ${r.status} for ${repository}:${reference}`, {status: 502})
    const digest = String(r.headers['docker-content-digest'] ?? '')
    if (!DIGEST.test(digest)) throw new JilError('REGISTRY_ERROR', `the registry sent no sha256 Docker-Content-Digest for ${repository}:${reference}`, {status: 502})
    return digest
  }

  /** Follows the registry's Link rel="next" pages (registries cap n, this one at 1000). */
  private async pages<T>(first: string, field: 'repositories' | 'tags', what: string, scope: string, signal?: AbortSignal): Promise<T[]> {
    const out: T[] = []
    let path: string | undefined = first
    for (let i = 0; path && i < 10_000; i++) {
      const r = await this.call('GET', path, {scope, signal})
      if (r.status === 404 && field === 'tags') return out
      if (r.status === 401 || r.status === 403) throw new JilError('REGISTRY_DENIED', `the registry refused ${what} (${r.status})`, {status: 502, hint: 'log in with docker login, or check that the registry trusts HQ\'s tokens (jil hq registry config)'})
      if (r.status !== 200) throw new JilError('REGISTRY_ERROR', `the registry answered ${r.status} ${what}`, {status: 502})
      out.push(...(((JSON.parse(r.body) as Record<string, T[] | null>)[field] ?? []) as T[]))
      const link = String(r.headers.link ?? '')
      path = /<([^>]+)>;\s*rel="?next"?/.exec(link)?.[1]
    }
    return out
  }

  repositories(signal?: AbortSignal): Promise<string[]> {
    return this.pages<string>('/v2/_catalog?n=1000', 'repositories', 'to the catalog request', CATALOG_SCOPE, signal)
  }

  tags(repository: string, signal?: AbortSignal): Promise<string[]> {
    return this.pages<string>(`/v2/${repository}/tags/list?n=1000`, 'tags', `listing tags of ${repository}`, pullScope(repository), signal)
  }

  /** Every (repository, tag, digest) the registry holds: what `jil hq images --unsigned` and the alert engine's registry scan walk. */
  async inventory(signal?: AbortSignal): Promise<{repository: string; tag: string; digest: string}[]> {
    const out: {repository: string; tag: string; digest: string}[] = []
    for (const repository of await this.repositories(signal)) {
      for (const tag of await this.tags(repository, signal)) out.push({repository, tag, digest: await this.resolve(repository, tag, signal)})
    }
    return out
  }
}

/** The token scopes the registry's challenges name for what this client reads. */
const CATALOG_SCOPE = 'registry:catalog:*'
const pullScope = (repository: string) => `repository:${repository}:pull`
