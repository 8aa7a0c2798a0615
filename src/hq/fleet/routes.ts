import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {AgentReportSchema, HeartbeatSchema, NODE_STATUSES, type AgentReport, type Heartbeat} from '../../shared/api.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {FleetService} from './service.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {ZONE_ANY_FORM_PATTERN, zoneFromPath} from '../../shared/zones.js'

const NodeId = Type.String({pattern: NODE_ID_PATTERN.source})
const Received = Type.Object({received_at: Type.String()})
const NodesQuery = Type.Object(
  {
    /** CH/FINMA or the URL form CH_FINMA. */
    zone: Type.Optional(Type.String({pattern: ZONE_ANY_FORM_PATTERN.source})),
    status: Type.Optional(Type.Union(NODE_STATUSES.map((s) => Type.Literal(s)))),
    version: Type.Optional(Type.String({minLength: 1, maxLength: 64})),
  },
  {additionalProperties: false},
)

/** Heartbeats and agent reports (nodes), and the fleet's node list (users). */
export function fleetRoutes(app: FastifyInstance, fleet: FleetService): void {
  app.post<{Body: Heartbeat}>('/v1/node/heartbeat', {config: {access: {node: true}}, schema: {body: HeartbeatSchema, response: {200: Received}}, validatorCompiler: verbatimValidator}, async (req) =>
    fleet.recordHeartbeat(principalOfRequest(req), req.body),
  )
  app.post<{Body: AgentReport}>('/v1/node/reports', {config: {access: {node: true}}, schema: {body: AgentReportSchema, response: {200: Received}}, validatorCompiler: verbatimValidator}, async (req) =>
    fleet.recordReport(principalOfRequest(req), req.body),
  )

  app.get<{Querystring: Static<typeof NodesQuery>}>(
    '/v1/fleet/nodes',
    // No response schema: fastify's serializer writes a null inside FleetNodeSchema's versions record as "".
    {config: {access: {permission: 'fleet:read'}}, schema: {querystring: NodesQuery}},
    async (req) => ({
      nodes: await fleet.listNodes({
        ...(req.query.zone ? {zone: zoneFromPath(req.query.zone)} : {}),
        ...(req.query.status ? {status: req.query.status} : {}),
        ...(req.query.version ? {version: req.query.version} : {}),
      }),
    }),
  )
  app.get<{Params: {id: string}}>('/v1/fleet/nodes/:id', {config: {access: {permission: 'fleet:read'}}, schema: {params: Type.Object({id: NodeId})}}, async (req) => fleet.getNode(req.params.id))
}
