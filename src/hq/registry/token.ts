import {createPrivateKey, randomBytes, sign, type KeyObject} from 'node:crypto'

import type {Clock} from '../../shared/clock.js'
import {exists, readSecret, readText, writeFileAtomic, writeSecret} from '../../shared/files.js'
import type {CertificateAuthority} from '../ca/ca.js'
import {hqPath} from '../datadir.js'
import {JilError} from '../../shared/errors.js'
import {pemToDer} from '../../shared/pki.js'
import type {Principal} from '../auth.js'
import {can} from '../rbac.js'

/**
 * HQ as the token server of the Docker registry token-authentication protocol (DESIGN.md §4, "three
 * locks, one key"): a node or user authenticated by mutual TLS gets a short-lived ES256 JWT whose
 * header carries the token-signing certificate (x5c) — the certificate the registry trusts through
 * its `rootcertbundle` — and whose `access` claim grants only what the caller may do.
 */
export const REGISTRY_SERVICE = 'jil-registry'
export const TOKEN_ISSUER = 'jil-hq'
export const TOKEN_TTL_S = 300

/**
 * What a token grants: pull/push on a repository, or `registry:catalog:*` (listing the
 * repositories), which only HQ's own walk of its registry gets (hqGrant), never a user or a node.
 */
export type RegistryAccess = {type: 'repository'; name: string; actions: ('pull' | 'push')[]} | {type: 'registry'; name: 'catalog'; actions: '*'[]}

/** Whom a token is for: an authenticated caller, or HQ itself (the alert engine's registry walk, `jil hq images --unsigned`). */
export type TokenSubject = Principal | {kind: 'hq'}
export const HQ_TOKEN_SUBJECT: TokenSubject = {kind: 'hq'}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url')

/** Parses `repository:NAME:pull,push` and `registry:catalog:*` scopes (space-separated, as the protocol sends several). */
export function parseScopes(scope: string | string[] | undefined): RegistryAccess[] {
  const parts = (Array.isArray(scope) ? scope : scope ? [scope] : []).flatMap((s) => s.split(' ')).filter(Boolean)
  return parts.map((s): RegistryAccess => {
    if (s === 'registry:catalog:*') return {type: 'registry', name: 'catalog', actions: ['*']}
    const m = /^repository:([a-z0-9]+(?:[._/-][a-z0-9]+)*):((?:pull|push|\*)(?:,(?:pull|push|\*))*)$/.exec(s)
    if (!m) throw new JilError('SCOPE_INVALID', `scope ${JSON.stringify(s)} is not repository:NAME:pull[,push] or registry:catalog:*`, {status: 400, hint: 'e.g. scope=repository:jil/settlement-api:pull'})
    const actions = [...new Set(m[2]!.split(',').flatMap((a) => (a === '*' ? ['pull', 'push'] : [a])))] as ('pull' | 'push')[]
    return {type: 'repository' as const, name: m[1]!, actions}
  })
}

/**
 * What the caller may do: active nodes pull; users pull (fleet:read) and, with images:sign, push.
 * Nobody gets the catalog from the token route: listing every repository is HQ's own walk (hqGrant).
 */
export function grant(p: Principal, wanted: RegistryAccess[]): RegistryAccess[] {
  return wanted.map((w) =>
    w.type === 'registry'
      ? {...w, actions: []}
      : {...w, actions: w.actions.filter((a) => (a === 'pull' ? p.kind === 'node' || can(p.role, 'fleet:read') : p.kind === 'user' && can(p.role, 'images:sign')))},
  )
}

/** What HQ grants itself to walk its registry: the catalog and pulls (to read tags and digests), never a push. */
export function hqGrant(wanted: RegistryAccess[]): RegistryAccess[] {
  return wanted.map((w) => (w.type === 'registry' ? w : {...w, actions: w.actions.filter((a) => a === 'pull')}))
}

export class RegistryTokenIssuer {
  private readonly key: KeyObject
  private readonly x5c: string

  constructor(
    keyPem: string,
    readonly certPem: string,
    private readonly clock: Clock,
  ) {
    this.key = createPrivateKey(keyPem)
    this.x5c = pemToDer(certPem).toString('base64')
  }

  issue(p: TokenSubject, service: string, access: RegistryAccess[], ttlS = TOKEN_TTL_S): {token: string; access_token: string; expires_in: number; issued_at: string} {
    if (service !== REGISTRY_SERVICE) throw new JilError('SERVICE_UNKNOWN', `HQ issues tokens for the service ${REGISTRY_SERVICE}, not ${service}`, {status: 400, hint: `configure the registry with service: ${REGISTRY_SERVICE}`})
    const now = Math.floor(this.clock.now().getTime() / 1000)
    const header = {alg: 'ES256', typ: 'JWT', x5c: [this.x5c]}
    const claims = {
      iss: TOKEN_ISSUER,
      sub: p.kind === 'user' ? `user:${p.name}` : p.kind === 'node' ? `node:${p.id}` : 'hq',
      aud: service,
      iat: now,
      nbf: now - 5,
      exp: now + ttlS,
      jti: randomBytes(12).toString('hex'),
      access: access.filter((a) => a.actions.length > 0),
    }
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`
    const sig = sign('sha256', Buffer.from(input), {key: this.key, dsaEncoding: 'ieee-p1363'})
    const token = `${input}.${b64url(sig)}`
    return {token, access_token: token, expires_in: ttlS, issued_at: new Date(now * 1000).toISOString()}
  }

  /**
   * A token for HQ itself, for what a registry's challenge asked (the RegistryClient's tokenFor):
   * HQ signs its own tokens rather than calling its own token route, which has no principal for it.
   */
  issueForHq(service: string, scope: string): {token: string; expires_in: number} {
    return this.issue(HQ_TOKEN_SUBJECT, service, hqGrant(parseScopes(scope)))
  }
}

/** The registry configuration that makes it trust HQ's tokens (Debian's docker-registry 2.8). */
export function registryAuthConfig(hqUrl: string, rootCertBundlePath: string): string {
  return [
    'auth:',
    '  token:',
    `    realm: ${hqUrl}/v1/registry/token`,
    `    service: ${REGISTRY_SERVICE}`,
    `    issuer: ${TOKEN_ISSUER}`,
    `    rootcertbundle: ${rootCertBundlePath}`,
    '',
  ].join('\n')
}

/**
 * The token-signing key and certificate in HQ's data dir, made on first start (replicas share the
 * data dir, so they share it). The certificate is what the registry's rootcertbundle holds.
 */
export async function ensureTokenSigner(dataDir: string, ca: CertificateAuthority): Promise<{keyPem: string; certPem: string; certPath: string}> {
  const keyPath = hqPath(dataDir, 'registryTokenKey')
  const certPath = hqPath(dataDir, 'registryTokenCert')
  if (!(await exists(certPath))) {
    // A serverAuth certificate: the registry verifies the x5c leaf with Go's default key usage.
    const issued = await ca.issueServer(['registry-token.jil.internal'], 3650)
    await writeSecret(keyPath, issued.keyPem)
    await writeFileAtomic(certPath, issued.pem, 0o644)
  }
  return {keyPem: await readSecret(keyPath, 'registry token key'), certPem: await readText(certPath, 'registry token certificate'), certPath}
}
