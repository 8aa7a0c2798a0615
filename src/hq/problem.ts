import type {FastifyError, FastifyInstance, FastifyReply} from 'fastify'

import {PROBLEM_CONTENT_TYPE, type Problem} from '../shared/api.js'
import {JilError} from '../shared/errors.js'

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

export function problem(status: number, code: string, detail: string, extra: {hint?: string; field?: string} = {}): Problem {
  return {type: `urn:jil:problem:${code}`, title: TITLES[status] ?? 'Error', status, code, detail, ...extra}
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type(PROBLEM_CONTENT_TYPE).send(p)
}

/** The one error handler: every error leaves HQ as RFC 9457 problem+json with a stable code; 5xx hide internals. */
export function installProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | JilError, req, reply) => {
    if (err instanceof JilError) {
      if (err.status >= 500) req.log.error({err}, 'request failed')
      return sendProblem(reply, {...problem(err.status, err.code, err.message, {...(err.hint ? {hint: err.hint} : {}), ...fieldOf(err)}), ...(err.details ?? {})})
    }
    const fe = err as FastifyError
    if (fe.validation) {
      const v = fe.validation[0]
      const params = (v?.params ?? {}) as {missingProperty?: string; additionalProperty?: string}
      const path = [v?.instancePath?.replace(/^\//, '').replace(/\//g, '.'), params.missingProperty ?? params.additionalProperty]
        .filter(Boolean)
        .join('.')
      const where = fe.validationContext ?? 'body'
      const field = path || where
      return sendProblem(
        reply,
        problem(400, where === 'body' ? 'INVALID_BODY' : `INVALID_${where.toUpperCase()}`, `${where} field ${field} ${v?.message ?? 'is invalid'}`, {
          field,
          hint: 'fix the named field and retry',
        }),
      )
    }
    if (fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (fe.statusCode === 400 && fe instanceof SyntaxError)) {
      return sendProblem(reply, problem(400, 'BAD_JSON', 'the request body is not valid JSON', {hint: 'send a JSON object'}))
    }
    if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
      return sendProblem(reply, problem(400, 'BAD_JSON', 'the request body is empty', {hint: 'send a JSON object'}))
    }
    // Two requests creating the same row at once: the loser sees the unique violation, which is a conflict.
    if ((fe as {code?: string}).code === '23505') {
      return sendProblem(reply, problem(409, 'CONFLICT', 'a concurrent request created the same thing first', {hint: 'list it, or retry'}))
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return sendProblem(reply, problem(fe.statusCode, (fe.code ?? 'BAD_REQUEST').replace(/^FST_ERR_/, ''), fe.message))
    }
    req.log.error({err}, 'request failed')
    return sendProblem(reply, problem(500, 'INTERNAL', 'HQ failed to handle the request', {hint: 'see the HQ log for details'}))
  })
  app.setNotFoundHandler((req, reply) =>
    sendProblem(reply, problem(404, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`, {hint: 'check the path and the API version'})),
  )
}

function fieldOf(err: JilError): {field?: string} {
  const f = err.details?.field
  return typeof f === 'string' ? {field: f} : {}
}
