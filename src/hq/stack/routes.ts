import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'

import {JilError} from '../../shared/errors.js'
import {isTrack, TRACKS, type Track} from '../../shared/manifest.js'
import {SERVICE_NAME, StackSpecSchema} from '../../shared/stack-schema.js'
import type {UserSignature} from '../../shared/user-signature.js'
import {principalOfRequest} from '../auth.js'
import {verbatimValidator} from '../validation.js'
import type {StackService} from './service.js'

const TrackParams = Type.Object({track: Type.String({maxLength: 32})})
const SetStack = Type.Object({spec: StackSpecSchema}, {additionalProperties: false})
const Pin = Type.Object(
  {
    service: Type.String({pattern: SERVICE_NAME}),
    version: Type.String({minLength: 2, maxLength: 64}),
    rollback: Type.Optional(
      Type.Object(
        {payload: Type.Record(Type.String(), Type.Unknown()), alg: Type.Literal('ES256'), signature: Type.String({maxLength: 200}), cert: Type.String({maxLength: 8192})},
        {additionalProperties: false},
      ),
    ),
  },
  {additionalProperties: false},
)

/** A track from a URL: an unknown one is named, with the three that exist. */
function trackOf(s: string): Track {
  if (!isTrack(s)) throw new JilError('TRACK_UNKNOWN', `no track ${JSON.stringify(s)}`, {status: 404, hint: `tracks: ${TRACKS.join(', ')}`})
  return s
}

/** Stack specs and pins (users), and each node's signed desired state (nodes). */
export function stackRoutes(app: FastifyInstance, stacks: StackService): void {
  app.get<{Params: Static<typeof TrackParams>}>('/v1/stacks/:track', {config: {access: {permission: 'fleet:read'}}, schema: {params: TrackParams}}, async (req) =>
    stacks.view(trackOf(req.params.track)),
  )
  app.put<{Params: Static<typeof TrackParams>; Body: Static<typeof SetStack>}>(
    '/v1/stacks/:track',
    {config: {access: {permission: 'stack:manage'}}, schema: {params: TrackParams, body: SetStack}, validatorCompiler: verbatimValidator},
    async (req) => stacks.setSpec(principalOfRequest(req), trackOf(req.params.track), req.body.spec),
  )
  app.post<{Params: Static<typeof TrackParams>; Body: Static<typeof Pin>}>(
    '/v1/stacks/:track/pins',
    {config: {access: {permission: 'stack:manage'}}, schema: {params: TrackParams, body: Pin}, validatorCompiler: verbatimValidator},
    async (req) => stacks.pin(principalOfRequest(req), trackOf(req.params.track), req.body.service, req.body.version, req.body.rollback as UserSignature | undefined),
  )

  // The node's own document: who it is comes from its certificate, never from the request.
  app.get('/v1/node/desired-state', {config: {access: {node: true}}}, async (req) => {
    const p = principalOfRequest(req)
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', 'only nodes fetch a desired state', {status: 403})
    return stacks.desiredState(p.id)
  })
}
