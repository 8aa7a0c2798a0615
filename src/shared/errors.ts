/**
 * Typed errors. A JilError is something the user can act on: a stable code, a one-line message
 * saying what is wrong and a one-line hint saying what to do. Anything else that reaches the
 * command boundary is a bug and is reported as INTERNAL.
 */

/** Exit codes of the CLI: 0 ok, 1 failure, 2 usage error. */
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

export type JilErrorOptions = {
  hint?: string
  /** HTTP status when this error crosses the API (problem+json). */
  status?: number
  /** CLI exit code (1 unless a usage error). */
  exit?: 1 | 2
  cause?: unknown
  /** Extra machine-readable fields (e.g. the failing field of a request body). */
  details?: Record<string, unknown>
}

export class JilError extends Error {
  readonly code: string
  readonly hint: string | undefined
  readonly status: number
  readonly exit: 1 | 2
  readonly details: Record<string, unknown> | undefined

  constructor(code: string, message: string, opts: JilErrorOptions = {}) {
    super(oneLine(message), opts.cause === undefined ? undefined : {cause: opts.cause})
    this.name = 'JilError'
    this.code = code
    this.hint = opts.hint === undefined ? undefined : oneLine(opts.hint)
    this.status = opts.status ?? 400
    this.exit = opts.exit ?? EXIT_FAILURE
    this.details = opts.details
  }

  toJSON(): {code: string; message: string; hint?: string} & Record<string, unknown> {
    return {code: this.code, message: this.message, ...(this.hint ? {hint: this.hint} : {}), ...(this.details ?? {})}
  }
}

/** A usage error: wrong flags or arguments (exit 2). */
export function usageError(code: string, message: string, hint?: string): JilError {
  return new JilError(code, message, {hint, exit: EXIT_USAGE, status: 400})
}

export function isJilError(err: unknown): err is JilError {
  return err instanceof JilError
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim()
}

/** The message of any thrown value, for wrapping foreign errors into a JilError. */
export function messageOf(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return messageOf(err.errors[0])
  if (err instanceof Error) return err.message || err.name
  return String(err)
}

/** Node's system error code (ECONNREFUSED, ENOENT, …) of a thrown value, looking through causes. */
export function systemCode(err: unknown): string | undefined {
  for (let e: unknown = err, i = 0; e && i < 5; i++) {
    if (typeof e === 'object' && e !== null) {
      const code = (e as {code?: unknown}).code
      if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code
      if (e instanceof AggregateError && e.errors.length > 0) {
        e = e.errors[0]
        continue
      }
      e = (e as {cause?: unknown}).cause
    } else break
  }
  return undefined
}
