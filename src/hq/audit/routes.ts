import {Readable} from 'node:stream'

import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {AuditPage, CheckpointSchema, ConsistencyProof, InclusionProof} from '../../shared/api.js'
import type {Db} from '../../shared/db/types.js'
import {EXPORT_FORMAT} from '../../shared/audit-verify.js'
import {JilError} from '../../shared/errors.js'
import {principalOfRequest} from '../auth.js'
import {LOG_COLUMNS, toCheckpoint, toEntry, type AuditLedger} from './ledger.js'

const AuditQuery = Type.Object(
  {
    actor: Type.Optional(Type.String({minLength: 1, maxLength: 200})),
    action: Type.Optional(Type.String({minLength: 1, maxLength: 100})),
    subject: Type.Optional(Type.String({minLength: 1, maxLength: 500})),
    since: Type.Optional(Type.String({format: 'date-time'})),
    until: Type.Optional(Type.String({format: 'date-time'})),
    after: Type.Optional(Type.Integer({minimum: 0, maximum: Number.MAX_SAFE_INTEGER})),
    before: Type.Optional(Type.Integer({minimum: 1, maximum: Number.MAX_SAFE_INTEGER})),
    order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
    limit: Type.Optional(Type.Integer({minimum: 1, maximum: 1000})),
  },
  {additionalProperties: false},
)
type AuditQuery = Static<typeof AuditQuery>

/** The ledger's routes: the seed's GET /v1/fleet/audit, checkpoints, proofs and the export stream. */
export function auditRoutes(app: FastifyInstance, db: Db, ledger: AuditLedger): void {
  // Export streams in flight: ended at shutdown so a slow reader never holds HQ open (DESIGN.md §6).
  const exports = new Set<Readable>()
  app.addHook('preClose', async () => {
    for (const s of exports) s.destroy()
  })

  app.get<{Querystring: AuditQuery}>('/v1/fleet/audit', {config: {access: {permission: 'fleet:read'}}, schema: {querystring: AuditQuery, response: {200: AuditPage}}}, async (req) => {
    const q = req.query
    const where: string[] = []
    const params: unknown[] = []
    const add = (sql: string, v: unknown) => {
      params.push(v)
      where.push(sql.replace('?', `$${params.length}`))
    }
    if (q.actor) add("actor ->> 'id' = ?", q.actor)
    if (q.action) add('action = ?', q.action)
    if (q.subject) add('subject = ?', q.subject)
    if (q.since) add('time >= ?', q.since)
    if (q.until) add('time < ?', q.until)
    if (q.after !== undefined) add('seq > ?', q.after)
    if (q.before !== undefined) add('seq < ?', q.before)
    const desc = q.order === 'desc'
    const limit = q.limit ?? 100
    params.push(limit + 1)
    const {rows} = await db.query<Parameters<typeof toEntry>[0]>(
      `SELECT ${LOG_COLUMNS} FROM audit_log ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY seq ${desc ? 'DESC' : 'ASC'} LIMIT $${params.length}`,
      params,
    )
    const entries = rows.slice(0, limit).map(toEntry)
    const more = rows.length > limit
    const last = entries.at(-1)
    return {entries, next: more && last ? (desc ? {before: last.seq} : {after: last.seq}) : null}
  })

  app.get('/v1/audit/checkpoint', {config: {access: {permission: 'fleet:read'}}, schema: {response: {200: CheckpointSchema}}}, async () => {
    const c = await ledger.latestCheckpoint()
    if (!c) throw new JilError('NO_CHECKPOINT', 'HQ has not signed an audit checkpoint yet', {status: 404, hint: 'POST /v1/audit/checkpoint signs one'})
    return c
  })

  app.post('/v1/audit/checkpoint', {config: {access: {permission: 'audit:checkpoint'}}, schema: {response: {200: CheckpointSchema}}}, async (req) => {
    principalOfRequest(req)
    const c = await ledger.checkpoint()
    if (!c) throw new JilError('NO_CHECKPOINT', 'the audit log is empty', {status: 404})
    return c
  })

  app.get<{Querystring: {after?: number; limit?: number}}>(
    '/v1/audit/checkpoints',
    {
      config: {access: {permission: 'fleet:read'}},
      schema: {
        querystring: Type.Object({after: Type.Optional(Type.Integer({minimum: 0, maximum: Number.MAX_SAFE_INTEGER})), limit: Type.Optional(Type.Integer({minimum: 1, maximum: 10000}))}, {additionalProperties: false}),
        response: {200: Type.Object({checkpoints: Type.Array(CheckpointSchema)})},
      },
    },
    async (req) => ({checkpoints: await ledger.checkpoints(req.query.after ?? 0, req.query.limit ?? 1000)}),
  )

  app.get<{Params: {seq: number}; Querystring: {size?: number}}>(
    '/v1/audit/proof/:seq',
    {
      config: {access: {permission: 'fleet:read'}},
      schema: {
        params: Type.Object({seq: Type.Integer({minimum: 1, maximum: Number.MAX_SAFE_INTEGER})}),
        querystring: Type.Object({size: Type.Optional(Type.Integer({minimum: 1, maximum: Number.MAX_SAFE_INTEGER}))}, {additionalProperties: false}),
        response: {200: InclusionProof},
      },
    },
    async (req) => {
      const size = req.query.size ?? (await ledger.latestCheckpoint())?.tree_size
      if (size === undefined) throw new JilError('NO_CHECKPOINT', 'no checkpoint to prove against', {status: 404, hint: 'pass ?size=N'})
      const entry = await ledger.entry(req.params.seq)
      if (!entry) throw new JilError('AUDIT_SEQ_INVALID', `the audit log has no entry ${req.params.seq}`, {status: 404, hint: 'pick a seq the log has reached'})
      return {seq: entry.seq, tree_size: size, leaf_index: entry.seq - 1, entry, proof: await ledger.inclusionProof(entry.seq, size)}
    },
  )

  app.get<{Querystring: {from: number; to: number}}>(
    '/v1/audit/consistency',
    {
      config: {access: {permission: 'fleet:read'}},
      schema: {
        querystring: Type.Object({from: Type.Integer({minimum: 1, maximum: Number.MAX_SAFE_INTEGER}), to: Type.Integer({minimum: 1, maximum: Number.MAX_SAFE_INTEGER})}, {additionalProperties: false}),
        response: {200: ConsistencyProof},
      },
    },
    async (req) => ({from: req.query.from, to: req.query.to, proof: await ledger.consistencyProof(req.query.from, req.query.to)}),
  )

  // The whole ledger as NDJSON: a header, every checkpoint, then every entry in seq order. What
  // `jil audit verify` walks and `jil audit export` saves; streamed in pages, never all in memory.
  // Checkpoints come first so a verifier checks each root as it reaches its size, in one pass.
  app.get('/v1/audit/export', {config: {access: {permission: 'fleet:read'}}}, async (_req, reply) => {
    async function* lines(): AsyncGenerator<string> {
      yield JSON.stringify({type: 'header', format: EXPORT_FORMAT, origin: ledger.origin}) + '\n'
      let size = 0
      for (;;) {
        const {rows} = await db.query<Parameters<typeof toCheckpoint>[0]>('SELECT * FROM audit_checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT 5000', [size])
        if (rows.length === 0) break
        let chunk = ''
        for (const r of rows) chunk += JSON.stringify({type: 'checkpoint', ...toCheckpoint(r)}) + '\n'
        yield chunk
        size = rows.at(-1)!.tree_size
      }
      let after = 0
      for (;;) {
        const {rows} = await db.query<Parameters<typeof toEntry>[0]>(`SELECT ${LOG_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 5000`, [after])
        if (rows.length === 0) break
        let chunk = ''
        for (const r of rows) chunk += JSON.stringify({type: 'entry', ...toEntry(r)}) + '\n'
        yield chunk
        after = rows.at(-1)!.seq
      }
    }
    const stream = Readable.from(lines())
    exports.add(stream)
    stream.once('close', () => exports.delete(stream))
    return reply.type('application/x-ndjson').send(stream)
  })
}


