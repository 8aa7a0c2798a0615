import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {AlertSchema, SilenceRequestSchema, SilenceSchema} from '../../shared/api.js'
import {ALERT_ID_PATTERN, ALERT_RULES, ALERT_SEVERITIES, ALERT_STATES, SILENCE_ID_PATTERN, type SilenceRequest} from '../../shared/alerts.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {AlertService} from './service.js'

const literals = <T extends string>(xs: readonly T[]) => Type.Union(xs.map((x) => Type.Literal(x)))
const AlertParams = Type.Object({id: Type.String({pattern: ALERT_ID_PATTERN.source})})
const SilenceParams = Type.Object({id: Type.String({pattern: SILENCE_ID_PATTERN.source})})
const ListQuery = Type.Object(
  {
    state: Type.Optional(literals(ALERT_STATES)),
    severity: Type.Optional(literals(ALERT_SEVERITIES)),
    rule: Type.Optional(literals(ALERT_RULES)),
    node: Type.Optional(Type.String({pattern: NODE_ID_PATTERN.source})),
    limit: Type.Optional(Type.Integer({minimum: 1, maximum: 5000})),
  },
  {additionalProperties: false},
)
const SilencesQuery = Type.Object({all: Type.Optional(Type.Boolean())}, {additionalProperties: false})

/** Alerts (read with fleet:read), acks and silences (alerts:manage). */
export function alertRoutes(app: FastifyInstance, alerts: AlertService): void {
  const read = {config: {access: {permission: 'fleet:read' as const}}}
  const manage = {config: {access: {permission: 'alerts:manage' as const}}}

  app.get<{Querystring: Static<typeof ListQuery>}>('/v1/alerts', {...read, schema: {querystring: ListQuery, response: {200: Type.Object({alerts: Type.Array(AlertSchema)})}}}, async (req) => ({
    alerts: await alerts.list(req.query),
  }))
  app.get<{Querystring: Static<typeof SilencesQuery>}>('/v1/alerts/silences', {...read, schema: {querystring: SilencesQuery, response: {200: Type.Object({silences: Type.Array(SilenceSchema)})}}}, async (req) => ({
    silences: await alerts.silences({all: req.query.all}),
  }))
  app.get<{Params: Static<typeof AlertParams>}>('/v1/alerts/:id', {...read, schema: {params: AlertParams, response: {200: AlertSchema}}}, async (req) => alerts.get(req.params.id))

  app.post<{Params: Static<typeof AlertParams>}>('/v1/alerts/:id/ack', {...manage, schema: {params: AlertParams, response: {200: AlertSchema}}}, async (req) =>
    alerts.ack(principalOfRequest(req), req.params.id),
  )
  app.post<{Body: SilenceRequest}>('/v1/alerts/silences', {...manage, schema: {body: SilenceRequestSchema, response: {200: SilenceSchema}}, validatorCompiler: verbatimValidator}, async (req) =>
    alerts.silence(principalOfRequest(req), req.body),
  )
  app.delete<{Params: Static<typeof SilenceParams>}>('/v1/alerts/silences/:id', {...manage, schema: {params: SilenceParams, response: {200: SilenceSchema}}}, async (req) =>
    alerts.unsilence(principalOfRequest(req), req.params.id),
  )
}
