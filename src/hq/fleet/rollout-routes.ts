import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {RollbackRequestSchema, ROLLOUT_ACTIONS, UpgradeRequestSchema, type RollbackRequest, type RolloutAction, type UpgradeRequest} from '../../shared/api.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {ZONE_PATH_PATTERN} from '../../shared/zones.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {RolloutService} from './rollouts.js'

const NodeParams = Type.Object({id: Type.String({pattern: NODE_ID_PATTERN.source})})
const ZoneParams = Type.Object({zone: Type.String({pattern: ZONE_PATH_PATTERN.source})})
const RolloutId = Type.String({pattern: '^ro_[0-9a-z]{20}$'})
const ListQuery = Type.Object({open: Type.Optional(Type.Boolean()), limit: Type.Optional(Type.Integer({minimum: 1, maximum: 200}))}, {additionalProperties: false})

/**
 * The seed's upgrade and rollback routes and the rollouts they start: `POST /v1/fleet/nodes/:id/upgrade`,
 * `POST /v1/fleet/jurisdictions/:zone/upgrade`, `POST /v1/fleet/nodes/:id/rollback`, and the users'
 * view and control of rollouts (`/v1/fleet/rollouts`).
 */
export function rolloutRoutes(app: FastifyInstance, rollouts: RolloutService): void {
  const operate = {config: {access: {permission: 'nodes:operate' as const}}, validatorCompiler: verbatimValidator}
  app.post<{Params: Static<typeof NodeParams>; Body: UpgradeRequest}>('/v1/fleet/nodes/:id/upgrade', {...operate, schema: {params: NodeParams, body: UpgradeRequestSchema}}, async (req) =>
    rollouts.upgrade(principalOfRequest(req), {node: req.params.id}, req.body),
  )
  app.post<{Params: Static<typeof ZoneParams>; Body: UpgradeRequest}>('/v1/fleet/jurisdictions/:zone/upgrade', {...operate, schema: {params: ZoneParams, body: UpgradeRequestSchema}}, async (req) =>
    rollouts.upgrade(principalOfRequest(req), {zone: req.params.zone}, req.body),
  )
  app.post<{Params: Static<typeof NodeParams>; Body: RollbackRequest}>('/v1/fleet/nodes/:id/rollback', {...operate, schema: {params: NodeParams, body: RollbackRequestSchema}}, async (req) =>
    rollouts.rollback(principalOfRequest(req), req.params.id, req.body),
  )

  app.get<{Querystring: Static<typeof ListQuery>}>('/v1/fleet/rollouts', {config: {access: {permission: 'fleet:read'}}, schema: {querystring: ListQuery}}, async (req) => ({
    rollouts: await rollouts.list({open: req.query.open, limit: req.query.limit}),
  }))
  app.get<{Params: {id: string}}>('/v1/fleet/rollouts/:id', {config: {access: {permission: 'fleet:read'}}, schema: {params: Type.Object({id: RolloutId})}}, async (req) => rollouts.get(req.params.id))
  app.post<{Params: {id: string; action: RolloutAction}}>(
    '/v1/fleet/rollouts/:id/:action',
    {config: {access: {permission: 'nodes:operate'}}, schema: {params: Type.Object({id: RolloutId, action: Type.Union(ROLLOUT_ACTIONS.map((a) => Type.Literal(a)))})}},
    async (req) => rollouts.act(principalOfRequest(req), req.params.id, req.params.action),
  )
}
