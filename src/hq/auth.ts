import type {TLSSocket} from 'node:tls'

import type {FastifyInstance, FastifyRequest} from 'fastify'

import type {Db} from '../shared/db/types.js'
import type {Clock} from '../shared/clock.js'
import {JilError} from '../shared/errors.js'
import {normalizeSerial, principalOf} from '../shared/pki.js'

/** Who is calling, derived from the client certificate on every request (DESIGN.md §4). */
export type Principal =
  | {kind: 'user'; name: string; role: string; serial: string; notAfter: Date}
  | {kind: 'node'; id: string; zone: string | undefined; serial: string; notAfter: Date}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined
  }
}

/**
 * The routes anyone may call without a client certificate — the only ones. Every other request
 * needs a certificate signed by HQ's CA whose serial HQ issued and has not revoked.
 */
export const ANONYMOUS_ROUTES: ReadonlySet<string> = new Set(['GET /v1/ca', 'GET /v1/ca/crl', 'POST /v1/node/join'])

export function isAnonymousRoute(method: string, routeUrl: string | undefined): boolean {
  return routeUrl !== undefined && ANONYMOUS_ROUTES.has(`${method === 'HEAD' ? 'GET' : method} ${routeUrl}`)
}

/** The principal of an authenticated request (route handlers behind the hook always have one). */
export function principalOfRequest(req: FastifyRequest): Principal {
  if (!req.principal) throw new JilError('UNAUTHENTICATED', 'no client certificate principal on this request', {status: 401})
  return req.principal
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
])

/** Maps the TLS verdict on the client certificate to a 401 with a stable code. */
function tlsRejection(sock: TLSSocket): JilError {
  const reason = String(sock.authorizationError ?? '')
  const hint = 'use a bundle issued by this HQ (jil hq user add) or a node identity from jil node join'
  if (!sock.encrypted) return new JilError('TLS_REQUIRED', 'HQ only speaks HTTPS with client certificates', {status: 401, hint})
  const peer = sock.getPeerCertificate()
  if (!peer || Object.keys(peer).length === 0) return new JilError('CLIENT_CERT_REQUIRED', 'this route needs a client certificate', {status: 401, hint})
  if (reason === 'CERT_HAS_EXPIRED') return new JilError('CERT_EXPIRED', 'the client certificate has expired', {status: 401, hint: 'renew it (jil hq user renew, jil node renew) or get a new bundle'})
  if (reason === 'CERT_NOT_YET_VALID') return new JilError('CERT_NOT_YET_VALID', 'the client certificate is not valid yet', {status: 401, hint: 'check the clocks of client and HQ'})
  if (UNTRUSTED.has(reason)) return new JilError('CERT_UNTRUSTED', 'the client certificate is not signed by this HQ\'s CA', {status: 401, hint})
  return new JilError('CERT_INVALID', `the client certificate was refused (${reason || 'unknown reason'})`, {status: 401, hint})
}

const expired = () => new JilError('CERT_EXPIRED', 'the client certificate has expired', {status: 401, hint: 'renew it (jil hq user renew, jil node renew) or get a new bundle'})

type CertLookup = {kind: string; subject: string; revoked_at: Date | null; not_after: Date; role: string | null; user_revoked_at: Date | null}

/**
 * The onRequest hook that makes mutual TLS the gate of every non-anonymous route.
 *
 * The principal is looked up once per TLS socket and kept with it: a socket presents one
 * certificate for its whole life, and a node's keep-alive connection then costs no database
 * lookup per heartbeat. Revocation stays instant because a cached principal dies with its socket:
 * the revoke routes destroy every live socket of the revoked serials before they answer (the
 * SocketRegistry, src/hq/identity/revocation.ts), and other replicas' RevocationWatcher does the same
 * within a second, so the revoked client's next request arrives on a new socket and is looked up.
 */
export function installAuth(app: FastifyInstance, db: Db, clock: Clock): void {
  const principals = new WeakMap<TLSSocket, Principal>()
  app.decorateRequest('principal', undefined)
  app.addHook('onRequest', async (req) => {
    if (isAnonymousRoute(req.method, req.routeOptions.url)) return
    const sock = req.raw.socket as TLSSocket
    if (!sock.encrypted || !sock.authorized) throw tlsRejection(sock)
    const known = principals.get(sock)
    if (known) {
      // TLS checked the dates at the handshake only; a keep-alive socket may outlive the certificate.
      if (clock.now().getTime() >= known.notAfter.getTime()) throw expired()
      req.principal = known
      return
    }
    const peer = sock.getPeerCertificate()
    const serial = normalizeSerial(peer.serialNumber)
    const claimed = principalOf({subjectAltName: peer.subjectaltname, subject: subjectLines(peer.subject)})
    const {rows} = await db.query<CertLookup>(
      `SELECT c.kind, c.subject, c.revoked_at, c.not_after, u.role, u.revoked_at AS user_revoked_at
         FROM certificates c LEFT JOIN users u ON c.kind = 'user' AND u.name = c.subject
        WHERE c.serial = $1`,
      [serial],
    )
    const row = rows[0]
    if (!row || !claimed) {
      throw new JilError('CERT_UNKNOWN', 'HQ has no record of issuing this client certificate', {status: 401, hint: 'use a bundle issued by this HQ'})
    }
    if (row.revoked_at || row.user_revoked_at) {
      throw new JilError('CERT_REVOKED', 'the client certificate has been revoked', {status: 401, hint: 'ask an admin for a new identity; revocation is permanent'})
    }
    if (claimed.kind === 'user' && row.kind === 'user' && row.subject === claimed.name && row.role) {
      req.principal = {kind: 'user', name: row.subject, role: row.role, serial, notAfter: row.not_after}
    } else if (claimed.kind === 'node' && row.kind === 'node' && row.subject === claimed.id) {
      req.principal = {kind: 'node', id: row.subject, zone: claimed.zone, serial, notAfter: row.not_after}
    } else {
      throw new JilError('CERT_UNKNOWN', 'the client certificate does not match HQ\'s record of it', {status: 401, hint: 'use a bundle issued by this HQ'})
    }
    if (clock.now().getTime() >= req.principal.notAfter.getTime()) throw expired()
    if (!sock.destroyed) principals.set(sock, req.principal)
  })
}

/** getPeerCertificate() gives the subject as an object; principalOf reads "K=V" lines. */
function subjectLines(subject: Partial<Record<string, string | string[]>> | undefined): string {
  if (!subject) return ''
  return Object.entries(subject)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v[0] : v}`)
    .join('\n')
}
