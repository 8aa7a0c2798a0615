import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {JilError} from '../../shared/errors.js'
import type {UserSignature} from '../../shared/user-signature.js'
import {principalOfRequest} from '../auth.js'
import {authorize} from '../rbac.js'
import type {ReleaseService} from './service.js'
import {grant, parseScopes, registryAuthConfig, type RegistryTokenIssuer} from '../registry/token.js'

const Digest = Type.String({pattern: '^sha256:[0-9a-f]{64}$'})
const Sign = Type.Object({image: Type.String({minLength: 3, maxLength: 500}), version: Type.String({minLength: 2, maxLength: 64}), commit: Type.String({minLength: 7, maxLength: 64})}, {additionalProperties: false})
const Approve = Type.Object(
  {
    track: Type.Union([Type.Literal('testnet'), Type.Literal('mainnet')]),
    approval: Type.Object({payload: Type.Record(Type.String(), Type.Unknown()), alg: Type.Literal('ES256'), signature: Type.String({maxLength: 200}), cert: Type.String({maxLength: 8192})}, {additionalProperties: false}),
  },
  {additionalProperties: false},
)
const Promote = Type.Object({to: Type.Union([Type.Literal('testnet'), Type.Literal('mainnet')]), allow_downgrade: Type.Optional(Type.Boolean())}, {additionalProperties: false})

/** Signed releases: sign, approve, promote, deprecate, list; manifests for nodes to verify offline. */
export type KeyStore = (next: {privatePem: string; publicPem: string; keyId: string}, previousKeyId: string) => Promise<string>

export function releaseRoutes(app: FastifyInstance, releases: ReleaseService, registry: string | undefined, tokens?: RegistryTokenIssuer, keyStore?: KeyStore): void {
  // The image-signing keys with their endorsement chain: nodes extend their pinned set along it.
  app.get('/v1/keys', {config: {access: {any: true}}}, async () => ({current: releases.currentKeyId, keys: await releases.keys()}))
  if (keyStore) {
    app.post('/v1/keys/rotate', {config: {access: {permission: 'keys:manage'}}}, async (req) => releases.rotateKey(principalOfRequest(req), keyStore))
  }
  app.post<{Params: {id: string}}>(
    '/v1/keys/:id/retire',
    {config: {access: {permission: 'keys:manage'}}, schema: {params: Type.Object({id: Type.String({pattern: '^[0-9a-f]{16}$'})})}},
    async (req) => releases.retireKey(principalOfRequest(req), req.params.id),
  )

  // The registry's lock: a short-lived pull (or push) token for an authenticated node or user.
  if (tokens) {
    app.get('/v1/registry/config', {config: {access: {permission: 'fleet:read'}}}, async (req) => ({
      // What the registry needs to trust HQ's tokens: this certificate as its rootcertbundle, and this snippet.
      rootcertbundle: tokens.certPem,
      config: registryAuthConfig(`https://${req.headers.host ?? 'HQ'}`, '/etc/docker/registry/jil-token.crt'),
    }))
    app.get<{Querystring: {service: string; scope?: string | string[]}}>(
      '/v1/registry/token',
      {config: {access: {any: true}}, schema: {querystring: Type.Object({service: Type.String({maxLength: 100}), scope: Type.Optional(Type.Union([Type.String({maxLength: 500}), Type.Array(Type.String({maxLength: 500}), {maxItems: 20})])), account: Type.Optional(Type.String({maxLength: 100})), client_id: Type.Optional(Type.String({maxLength: 100}))})}},
      async (req) => {
        const p = principalOfRequest(req)
        return tokens.issue(p, req.query.service, grant(p, parseScopes(req.query.scope)))
      },
    )
  }

  app.post<{Body: Static<typeof Sign>}>('/v1/images', {config: {access: {permission: 'images:sign'}}, schema: {body: Sign}}, async (req) =>
    releases.sign(principalOfRequest(req), {ref: req.body.image, version: req.body.version, commit: req.body.commit}),
  )
  app.get<{Querystring: {track?: 'devnet' | 'testnet' | 'mainnet'}}>(
    '/v1/images',
    {config: {access: {permission: 'fleet:read'}}, schema: {querystring: Type.Object({track: Type.Optional(Type.Union([Type.Literal('devnet'), Type.Literal('testnet'), Type.Literal('mainnet')]))}, {additionalProperties: false})}},
    async (req) => ({images: await releases.list(req.query.track)}),
  )
  app.get<{Querystring: {registry?: string}}>(
    '/v1/images/unsigned',
    {config: {access: {permission: 'fleet:read'}}, schema: {querystring: Type.Object({registry: Type.Optional(Type.String({minLength: 3, maxLength: 255}))}, {additionalProperties: false})}},
    async (req) => {
      // Another registry than HQ's own only for admins: otherwise any viewer could make HQ call any host.
      if (req.query.registry && req.query.registry !== registry) authorize(principalOfRequest(req), {permission: 'users:manage'})
      const r = req.query.registry ?? registry
      if (!r) throw new JilError('REGISTRY_REQUIRED', 'HQ has no registry configured', {status: 400, hint: 'pass ?registry=HOST:PORT (jil hq images --unsigned --registry HOST:PORT)'})
      return {unsigned: await releases.unsigned(r)}
    },
  )
  app.post<{Params: {digest: string}; Body: Static<typeof Approve>}>(
    '/v1/images/:digest/approvals',
    {config: {access: {permission: 'images:approve'}}, schema: {params: Type.Object({digest: Digest}), body: Approve}},
    async (req) => releases.approve(principalOfRequest(req), req.params.digest, req.body.track, req.body.approval as UserSignature),
  )
  app.post<{Params: {digest: string}; Body: Static<typeof Promote>}>(
    '/v1/images/:digest/promote',
    {config: {access: {permission: 'images:promote'}}, schema: {params: Type.Object({digest: Digest}), body: Promote}},
    async (req) => releases.promote(principalOfRequest(req), req.params.digest, req.body.to, req.body.allow_downgrade ?? false),
  )
  app.post<{Params: {digest: string}; Body: {reason: string}}>(
    '/v1/images/:digest/deprecate',
    {config: {access: {permission: 'images:deprecate'}}, schema: {params: Type.Object({digest: Digest}), body: Type.Object({reason: Type.String({minLength: 1, maxLength: 500})}, {additionalProperties: false})}},
    async (req) => releases.deprecate(principalOfRequest(req), req.params.digest, req.body.reason),
  )
  // What a node needs to verify a digest offline: its manifests (deprecations included) and the key set.
  app.get<{Params: {digest: string}}>('/v1/images/:digest/manifests', {config: {access: {any: true}}, schema: {params: Type.Object({digest: Digest})}}, async (req) =>
    releases.manifestsFor(req.params.digest),
  )
}
