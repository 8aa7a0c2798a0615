import type {TLSSocket} from 'node:tls'

import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance, FastifyReply, FastifyRequest} from 'fastify'

import {JilError} from '../../shared/errors.js'
import {principalOfRequest} from '../auth.js'
import {authorize} from '../rbac.js'
import type {CrlService, SocketRegistry} from './revocation.js'
import {actorOf, TRACKS, type IdentityService} from './service.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {ZONE_ANY_FORM_PATTERN} from '../../shared/zones.js'

const Csr = Type.String({minLength: 100, maxLength: 8192})
const Reason = Type.String({minLength: 1, maxLength: 500})
const NodeId = Type.String({pattern: NODE_ID_PATTERN.source})

const UserAdd = Type.Object({name: Type.String({minLength: 1, maxLength: 63}), role: Type.String(), csr: Csr}, {additionalProperties: false})
const Operator = Type.Object({name: Type.String({minLength: 1, maxLength: 100}), kyc: Type.Union([Type.Literal('approved'), Type.Literal('pending'), Type.Literal('rejected')])}, {additionalProperties: false})
const Admit = Type.Object(
  {
    node_id: NodeId,
    zone: Type.String({pattern: ZONE_ANY_FORM_PATTERN.source}),
    operator: Type.String({minLength: 1, maxLength: 100}),
    track: Type.Optional(Type.Union(TRACKS.map((t) => Type.Literal(t)))),
    ttl_seconds: Type.Optional(Type.Integer({minimum: 60, maximum: 30 * 86400})),
  },
  {additionalProperties: false},
)
const Join = Type.Object(
  {
    token: Type.String({minLength: 10, maxLength: 200}),
    csr: Csr,
    operator: Type.String({minLength: 1, maxLength: 100}),
    hardware: Type.Object({
      machine_id: Type.String({minLength: 1, maxLength: 200}),
      system_uuid: Type.Optional(Type.String({maxLength: 200})),
      hostname: Type.Optional(Type.String({maxLength: 255})),
      cpu_cores: Type.Integer({minimum: 0}),
      memory_bytes: Type.Integer({minimum: 0}),
      disk_bytes: Type.Integer({minimum: 0}),
    }),
  },
  {additionalProperties: false},
)

export type IdentityDeps = {
  identity: IdentityService
  crl: CrlService
  sockets: SocketRegistry
  caCertPem: string
  caFingerprint: string
  signingKeys: {key_id: string; public_key: string}[]
}

/** Closes every live connection of the revoked serials now, and the caller's own after its response. */
function sweep(req: FastifyRequest, reply: FastifyReply, deps: IdentityDeps, serials: string[]): void {
  const own = req.raw.socket as TLSSocket
  deps.sockets.destroy(serials, own)
  const p = req.principal
  if (p && serials.includes(p.serial)) {
    reply.header('connection', 'close')
    reply.raw.once('finish', () => own.destroy())
  }
}

/**
 * The revocation has committed (HQ refuses the serial from now on); the CRL for brokers and peers
 * follows. If signing it fails the revoke still succeeded: log it, and the hourly re-sign retries.
 */
async function resignAfterRevoke(req: FastifyRequest, deps: IdentityDeps): Promise<void> {
  try {
    await deps.crl.resign()
  } catch (err) {
    req.log.error({err}, 'CRL re-signing after a revocation failed; the hourly re-sign will retry')
  }
}

/** Users, operators, node admission and join, renewal, revocation, the CRL. */
export function identityRoutes(app: FastifyInstance, deps: IdentityDeps): void {
  const {identity} = deps

  app.get('/v1/ca/crl', async (req, reply) => {
    const crl = await deps.crl.latest()
    const pem = String(req.headers.accept ?? '').includes('pem') || (req.query as {format?: string}).format === 'pem'
    return pem ? reply.type('application/x-pem-file').send(crl.pem) : reply.type('application/pkix-crl').send(Buffer.from(crl.der))
  })

  // ---- users
  app.post<{Body: Static<typeof UserAdd>}>('/v1/users', {config: {access: {permission: 'users:manage'}}, schema: {body: UserAdd}}, async (req) => {
    const r = await identity.addUser(actorOf(principalOfRequest(req)), req.body.name, req.body.role, req.body.csr)
    return {name: r.name, role: r.role, cert: r.cert.pem, serial: r.cert.serial, not_after: r.cert.notAfter.toISOString(), ca: deps.caCertPem, ca_fingerprint: deps.caFingerprint}
  })
  app.get('/v1/users', {config: {access: {permission: 'fleet:read'}}}, async () => ({users: await identity.listUsers()}))
  app.post<{Params: {name: string}; Body: {csr: string}}>(
    '/v1/users/:name/renew',
    // Any user may renew their own certificate; renewing someone else's needs users:manage (checked below).
    {config: {access: {any: true}}, schema: {body: Type.Object({csr: Csr}, {additionalProperties: false})}},
    async (req) => {
      const p = principalOfRequest(req)
      if (p.kind !== 'user') throw new JilError('FORBIDDEN', 'nodes renew with POST /v1/nodes/renew', {status: 403})
      if (p.name !== req.params.name) authorize(p, {permission: 'users:manage'})
      const r = await identity.renewUser(p, req.params.name, req.body.csr)
      return {name: r.name, role: r.role, cert: r.cert.pem, serial: r.cert.serial, not_after: r.cert.notAfter.toISOString(), ca: deps.caCertPem, ca_fingerprint: deps.caFingerprint}
    },
  )
  app.delete<{Params: {name: string}; Body: {reason?: string} | undefined}>(
    '/v1/users/:name',
    {config: {access: {permission: 'users:manage'}}, schema: {body: Type.Optional(Type.Object({reason: Type.Optional(Reason)}, {additionalProperties: false}))}},
    async (req, reply) => {
      const r = await identity.revokeUser(principalOfRequest(req), req.params.name, req.body?.reason ?? 'revoked by an admin')
      sweep(req, reply, deps, r.serials)
      await resignAfterRevoke(req, deps)
      return r
    },
  )

  // ---- operators
  app.post<{Body: Static<typeof Operator>}>('/v1/operators', {config: {access: {permission: 'operators:manage'}}, schema: {body: Operator}}, async (req) =>
    identity.setOperator(principalOfRequest(req), req.body.name, req.body.kyc, 'add'),
  )
  app.get('/v1/operators', {config: {access: {permission: 'fleet:read'}}}, async () => ({operators: await identity.listOperators()}))
  app.patch<{Params: {name: string}; Body: {kyc: string}}>(
    '/v1/operators/:name',
    {config: {access: {permission: 'operators:manage'}}, schema: {body: Type.Object({kyc: Operator.properties.kyc}, {additionalProperties: false})}},
    async (req) => identity.setOperator(principalOfRequest(req), req.params.name, req.body.kyc, 'set'),
  )

  // ---- nodes: admission (the seed's POST /v1/fleet/nodes), join, renewal, revocation
  app.post<{Body: Static<typeof Admit>}>('/v1/fleet/nodes', {config: {access: {permission: 'nodes:admit'}}, schema: {body: Admit}}, async (req) =>
    identity.admitNode(principalOfRequest(req), {
      node_id: req.body.node_id,
      zone: req.body.zone,
      operator: req.body.operator,
      track: req.body.track ?? 'mainnet',
      ttlMs: (req.body.ttl_seconds ?? 86_400) * 1000,
    }),
  )

  app.post<{Body: Static<typeof Join>}>('/v1/node/join', {schema: {body: Join}}, async (req) => {
    const r = await identity.joinNode(req.body)
    return {
      node_id: r.node_id,
      zone: r.zone,
      track: r.track,
      operator: r.operator,
      cert: r.cert.pem,
      serial: r.cert.serial,
      not_after: r.cert.notAfter.toISOString(),
      ca: deps.caCertPem,
      ca_fingerprint: deps.caFingerprint,
      signing_keys: deps.signingKeys,
    }
  })

  app.post<{Body: {csr: string}}>('/v1/nodes/renew', {config: {access: {node: true}}, schema: {body: Type.Object({csr: Csr}, {additionalProperties: false})}}, async (req) => {
    const cert = await identity.renewNode(principalOfRequest(req), req.body.csr)
    return {cert: cert.pem, serial: cert.serial, not_after: cert.notAfter.toISOString()}
  })

  app.delete<{Params: {id: string}; Body: {reason: string}}>(
    '/v1/fleet/nodes/:id',
    {config: {access: {permission: 'nodes:revoke'}}, schema: {params: Type.Object({id: NodeId}), body: Type.Object({reason: Reason}, {additionalProperties: false})}},
    async (req, reply) => {
      const r = await identity.revokeNode(principalOfRequest(req), req.params.id, req.body.reason)
      sweep(req, reply, deps, r.serials)
      await resignAfterRevoke(req, deps)
      return r
    },
  )
}
