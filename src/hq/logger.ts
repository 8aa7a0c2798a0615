import {pino, type Logger} from 'pino'

/** HQ's structured logs: JSON to stderr. Secrets are redacted wherever they could appear. */
export function hqLogger(level = process.env.JIL_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: {svc: 'jil-hq'},
      redact: {paths: ['req.headers.authorization', '*.key', '*.token', '*.secret', '*.password', '*.database_url'], censor: '[redacted]'},
    },
    pino.destination({fd: 2, sync: false}),
  )
}
