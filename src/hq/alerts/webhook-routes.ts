import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {DeliverySchema, WebhookAddRequestSchema, WebhookSchema} from '../../shared/api.js'
import {DELIVERY_ID_PATTERN, DELIVERY_STATES, WEBHOOK_ID_PATTERN, type WebhookAddRequest} from '../../shared/webhooks.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {WebhookService} from './webhooks.js'

const WebhookParams = Type.Object({id: Type.String({pattern: WEBHOOK_ID_PATTERN.source})})
const DeliveryParams = Type.Object({id: Type.String({pattern: DELIVERY_ID_PATTERN.source})})
const DeliveriesQuery = Type.Object(
  {
    webhook: Type.Optional(Type.String({pattern: WEBHOOK_ID_PATTERN.source})),
    state: Type.Optional(Type.Union(DELIVERY_STATES.map((s) => Type.Literal(s)))),
    limit: Type.Optional(Type.Integer({minimum: 1, maximum: 5000})),
  },
  {additionalProperties: false},
)

/** Webhooks and their deliveries (read with fleet:read); add, remove and test (alerts:manage). */
export function webhookRoutes(app: FastifyInstance, webhooks: WebhookService): void {
  const read = {config: {access: {permission: 'fleet:read' as const}}}
  const manage = {config: {access: {permission: 'alerts:manage' as const}}}

  app.get('/v1/alerts/webhooks', {...read, schema: {response: {200: Type.Object({webhooks: Type.Array(WebhookSchema)})}}}, async () => ({webhooks: await webhooks.list()}))
  app.post<{Body: WebhookAddRequest}>('/v1/alerts/webhooks', {...manage, schema: {body: WebhookAddRequestSchema, response: {200: WebhookSchema}}, validatorCompiler: verbatimValidator}, async (req) =>
    webhooks.add(principalOfRequest(req), req.body),
  )
  app.delete<{Params: Static<typeof WebhookParams>}>('/v1/alerts/webhooks/:id', {...manage, schema: {params: WebhookParams, response: {200: WebhookSchema}}}, async (req) =>
    webhooks.remove(principalOfRequest(req), req.params.id),
  )
  app.post<{Params: Static<typeof WebhookParams>}>('/v1/alerts/webhooks/:id/test', {...manage, schema: {params: WebhookParams, response: {200: DeliverySchema}}}, async (req) =>
    webhooks.test(principalOfRequest(req), req.params.id),
  )
  app.get<{Querystring: Static<typeof DeliveriesQuery>}>('/v1/alerts/webhooks/deliveries', {...read, schema: {querystring: DeliveriesQuery, response: {200: Type.Object({deliveries: Type.Array(DeliverySchema)})}}}, async (req) => ({
    deliveries: await webhooks.deliveries(req.query),
  }))
  app.get<{Params: Static<typeof DeliveryParams>}>('/v1/alerts/webhooks/deliveries/:id', {...read, schema: {params: DeliveryParams, response: {200: DeliverySchema}}}, async (req) => webhooks.delivery(req.params.id))
}
