/**
 * The wire contract of HQ API v1 (DESIGN.md §6): TypeBox schemas that HQ validates against and
 * the one HQ client types its results with. TypeBox is JSON Schema, so fastify's validator and
 * serializer use these directly.
 */
import {Type, type Static} from '@sinclair/typebox'

export const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  code: Type.String(),
  detail: Type.Optional(Type.String()),
  hint: Type.Optional(Type.String()),
  field: Type.Optional(Type.String()),
})
export type Problem = Static<typeof Problem>

export const WhoAmI = Type.Object({
  kind: Type.Union([Type.Literal('user'), Type.Literal('node')]),
  name: Type.String({description: 'user name or node id'}),
  role: Type.Optional(Type.String()),
  zone: Type.Optional(Type.String()),
  serial: Type.String(),
  not_after: Type.String({format: 'date-time'}),
})
export type WhoAmI = Static<typeof WhoAmI>

export const Health = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  time: Type.String({format: 'date-time'}),
  database: Type.Union([Type.Literal('pg'), Type.Literal('pglite')]),
})
export type Health = Static<typeof Health>

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'
