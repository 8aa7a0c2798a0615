import {readFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {join} from 'node:path'

import {JilError, messageOf, systemCode} from '../../shared/errors.js'

/**
 * A small OCI distribution client: what HQ needs of a registry — the manifest digest a tag points
 * at (HEAD /v2/NAME/manifests/TAG, Docker-Content-Digest), and the catalog and tags to find
 * unsigned digests. Credentials come from the usual Docker config when present.
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

export class RegistryClient {
  constructor(
    private readonly registry: string,
    private readonly authorization?: string,
  ) {}

  static async for(registry: string): Promise<RegistryClient> {
    return new RegistryClient(registry, await dockerCredentials(registry))
  }

  private async call(method: 'GET' | 'HEAD', path: string, accept?: string): Promise<{status: number; headers: Record<string, string | string[] | undefined>; body: string}> {
    const {request} = await import('undici')
    try {
      const res = await request(baseUrl(this.registry) + path, {
        method,
        headers: {...(accept ? {accept} : {}), ...(this.authorization ? {authorization: this.authorization} : {})},
        headersTimeout: 15_000,
        bodyTimeout: 30_000,
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
  async resolve(repository: string, reference: string): Promise<string> {
    const r = await this.call('HEAD', `/v2/${repository}/manifests/${reference}`, MANIFEST_ACCEPT)
    if (r.status === 404) throw new JilError('IMAGE_NOT_FOUND', `${this.registry}/${repository}:${reference} is not in the registry`, {status: 404, hint: 'push the image first, or check the name and tag'})
    if (r.status === 401 || r.status === 403) throw new JilError('REGISTRY_DENIED', `the registry refused access to ${repository} (${r.status})`, {status: 502, hint: 'log in with docker login, or check the registry\'s token service'})
    if (r.status !== 200) throw new JilError('REGISTRY_ERROR', `the registry answered ${r.status} for ${repository}:${reference}`, {status: 502})
    const digest = String(r.headers['docker-content-digest'] ?? '')
    if (!DIGEST.test(digest)) throw new JilError('REGISTRY_ERROR', `the registry sent no sha256 Docker-Content-Digest for ${repository}:${reference}`, {status: 502})
    return digest
  }

  /** Follows the registry's Link rel="next" pages (registries cap n, this one at 1000). */
  private async pages<T>(first: string, field: 'repositories' | 'tags', what: string): Promise<T[]> {
    const out: T[] = []
    let path: string | undefined = first
    for (let i = 0; path && i < 10_000; i++) {
      const r = await this.call('GET', path)
      if (r.status === 404 && field === 'tags') return out
      if (r.status !== 200) throw new JilError('REGISTRY_ERROR', `the registry answered ${r.status} ${what}`, {status: 502})
      out.push(...(((JSON.parse(r.body) as Record<string, T[] | null>)[field] ?? []) as T[]))
      const link = String(r.headers.link ?? '')
      path = /<([^>]+)>;\s*rel="?next"?/.exec(link)?.[1]
    }
    return out
  }

  repositories(): Promise<string[]> {
    return this.pages<string>('/v2/_catalog?n=1000', 'repositories', 'to the catalog request')
  }

  tags(repository: string): Promise<string[]> {
    return this.pages<string>(`/v2/${repository}/tags/list?n=1000`, 'tags', `listing tags of ${repository}`)
  }

  /** Every (repository, tag, digest) the registry holds: what `jil hq images --unsigned` walks. */
  async inventory(): Promise<{repository: string; tag: string; digest: string}[]> {
    const out: {repository: string; tag: string; digest: string}[] = []
    for (const repository of await this.repositories()) {
      for (const tag of await this.tags(repository)) out.push({repository, tag, digest: await this.resolve(repository, tag)})
    }
    return out
  }
}
