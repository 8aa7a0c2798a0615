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
  /** The permission a 403 names. */
  permission: Type.Optional(Type.String()),
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

const Hex32 = Type.String({pattern: '^[0-9a-f]{64}$'})

export const AuditActorSchema = Type.Union([
  Type.Object({type: Type.Literal('user'), id: Type.String(), role: Type.String()}),
  Type.Object({type: Type.Literal('node'), id: Type.String()}),
  Type.Object({type: Type.Literal('hq'), id: Type.String()}),
])

export const AuditEntrySchema = Type.Object({
  seq: Type.Integer({minimum: 1}),
  time: Type.String(),
  actor: AuditActorSchema,
  action: Type.String(),
  subject: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
  prev_hash: Hex32,
  hash: Hex32,
})

export const AuditPage = Type.Object({
  entries: Type.Array(AuditEntrySchema),
  /** The cursor of the next page (same filters), or null at the end. */
  next: Type.Union([Type.Object({after: Type.Integer()}), Type.Object({before: Type.Integer()}), Type.Null()]),
})
export type AuditPage = Static<typeof AuditPage>

export const CheckpointSchema = Type.Object({
  origin: Type.String(),
  tree_size: Type.Integer({minimum: 1}),
  root_hash: Hex32,
  time: Type.String(),
  key_id: Type.String(),
  signature: Type.String(),
})

export const InclusionProof = Type.Object({
  seq: Type.Integer(),
  tree_size: Type.Integer(),
  leaf_index: Type.Integer(),
  entry: AuditEntrySchema,
  proof: Type.Array(Hex32),
})
export type InclusionProof = Static<typeof InclusionProof>

export const ConsistencyProof = Type.Object({from: Type.Integer(), to: Type.Integer(), proof: Type.Array(Hex32)})
export type ConsistencyProof = Static<typeof ConsistencyProof>
