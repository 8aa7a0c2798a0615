import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {COMMAND_STATUSES, CommandResultSchema, CommandTargetSchema, NODE_COMMANDS, RUN_MODE_ACTIONS, type CommandResult, type CommandTarget, type NodeCommandName, type RunModeAction} from '../../shared/api.js'
import {JilError} from '../../shared/errors.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {RunModeActions} from './actions.js'
import {MAX_WAIT_S, type CommandService} from './commands.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'

const NodeId = Type.String({pattern: NODE_ID_PATTERN.source})
const CommandId = Type.String({pattern: '^cmd_[0-9a-z]{20}$'})
const WaitQuery = Type.Object({wait: Type.Optional(Type.Integer({minimum: 0, maximum: MAX_WAIT_S}))}, {additionalProperties: false})
const ListQuery = Type.Object(
  {
    node: Type.Optional(NodeId),
    status: Type.Optional(Type.Union(COMMAND_STATUSES.map((s) => Type.Literal(s)))),
    limit: Type.Optional(Type.Integer({minimum: 1, maximum: 1000})),
  },
  {additionalProperties: false},
)
const Enqueue = Type.Object({command: Type.Union(NODE_COMMANDS.map((c) => Type.Literal(c))), target: CommandTargetSchema}, {additionalProperties: false})

/**
 * Commands to nodes: the node's long-poll and its answers (node certificates), the users' view and
 * broadcast, and the run-mode actions (stop, start, pause, resume) that change a node's desired state.
 */
export function commandRoutes(app: FastifyInstance, commands: CommandService, actions: RunModeActions): void {
  // A long-poll must never hold HQ's shutdown: ended before the server waits for requests in flight.
  app.addHook('preClose', async () => commands.close())

  app.get<{Querystring: Static<typeof WaitQuery>}>('/v1/node/commands', {config: {access: {node: true}}, schema: {querystring: WaitQuery}}, async (req, reply) => {
    const p = principalOfRequest(req)
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', 'only nodes fetch commands', {status: 403})
    // The client going away ends the wait (the response closes before it was written; the
    // request's own 'close' fires as soon as its body is read, so it cannot tell).
    const gone = new AbortController()
    const onClose = () => gone.abort()
    reply.raw.once('close', onClose)
    try {
      return {commands: await commands.poll(p.id, req.query.wait ?? 0, gone.signal)}
    } finally {
      reply.raw.off('close', onClose)
    }
  })

  app.post<{Params: {id: string}; Body: CommandResult}>(
    '/v1/node/commands/:id/result',
    {config: {access: {node: true}}, schema: {params: Type.Object({id: CommandId}), body: CommandResultSchema}, validatorCompiler: verbatimValidator},
    async (req) => commands.recordResult(principalOfRequest(req), req.params.id, req.body),
  )

  app.get<{Querystring: Static<typeof ListQuery>}>('/v1/fleet/commands', {config: {access: {permission: 'fleet:read'}}, schema: {querystring: ListQuery}}, async (req) => ({
    commands: await commands.list({node: req.query.node, status: req.query.status, limit: req.query.limit}),
  }))
  app.get<{Params: {id: string}}>('/v1/fleet/commands/:id', {config: {access: {permission: 'fleet:read'}}, schema: {params: Type.Object({id: CommandId})}}, async (req) => commands.get(req.params.id))

  app.post<{Body: Static<typeof Enqueue>}>('/v1/fleet/commands', {config: {access: {permission: 'nodes:operate'}}, schema: {body: Enqueue}, validatorCompiler: verbatimValidator}, async (req) =>
    commands.enqueue(principalOfRequest(req), req.body.target as CommandTarget, req.body.command as NodeCommandName),
  )

  for (const action of RUN_MODE_ACTIONS) {
    app.post<{Params: {id: string}}>(`/v1/fleet/nodes/:id/${action}`, {config: {access: {permission: 'nodes:operate'}}, schema: {params: Type.Object({id: NodeId})}}, async (req) =>
      actions.apply(principalOfRequest(req), req.params.id, action as RunModeAction),
    )
  }
}
