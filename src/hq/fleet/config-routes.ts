import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {ConfigPushRequestSchema, type ConfigPushRequest} from '../../shared/api.js'
import {JilError} from '../../shared/errors.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {ZONE_ANY_FORM_PATTERN, ZONE_PATH_PATTERN} from '../../shared/zones.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {ConfigService} from './config.js'

const NodeParams = Type.Object({id: Type.String({pattern: NODE_ID_PATTERN.source})})
const ZoneParams = Type.Object({zone: Type.String({pattern: ZONE_PATH_PATTERN.source})})
const ListQuery = Type.Object(
  {
    /** CH/FINMA or the URL form CH_FINMA. */
    zone: Type.Optional(Type.String({pattern: ZONE_ANY_FORM_PATTERN.source})),
    node: Type.Optional(Type.String({pattern: NODE_ID_PATTERN.source})),
  },
  {additionalProperties: false},
)

/**
 * Config push: `POST /v1/fleet/jurisdictions/:zone/config` (zone as CH_FINMA) and
 * `POST /v1/fleet/nodes/:id/config`, body `{name, content}` taken verbatim (HQ hashes and stores the
 * content as sent); `GET /v1/fleet/config?zone=Z|node=ID` lists what a zone or a node has.
 */
export function configRoutes(app: FastifyInstance, config: ConfigService): void {
  const operate = {config: {access: {permission: 'nodes:operate' as const}}, validatorCompiler: verbatimValidator}
  app.post<{Params: Static<typeof ZoneParams>; Body: ConfigPushRequest}>('/v1/fleet/jurisdictions/:zone/config', {...operate, schema: {params: ZoneParams, body: ConfigPushRequestSchema}}, async (req) =>
    config.push(principalOfRequest(req), {zone: req.params.zone}, req.body),
  )
  app.post<{Params: Static<typeof NodeParams>; Body: ConfigPushRequest}>('/v1/fleet/nodes/:id/config', {...operate, schema: {params: NodeParams, body: ConfigPushRequestSchema}}, async (req) =>
    config.push(principalOfRequest(req), {node: req.params.id}, req.body),
  )
  app.get<{Querystring: Static<typeof ListQuery>}>('/v1/fleet/config', {config: {access: {permission: 'fleet:read'}}, schema: {querystring: ListQuery}}, async (req) => {
    const {zone, node} = req.query
    if ((zone === undefined) === (node === undefined)) {
      throw new JilError('TARGET_REQUIRED', 'give exactly one of zone and node', {status: 400, hint: 'GET /v1/fleet/config?zone=CH_FINMA or ?node=CH-ZUG-01'})
    }
    return config.list(zone !== undefined ? {zone} : {node: node!})
  })
}
