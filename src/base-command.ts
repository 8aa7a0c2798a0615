import {Command, Errors, Flags} from '@oclif/core'

import {EXIT_FAILURE, EXIT_USAGE, JilError, messageOf} from './shared/errors.js'

/**
 * The base of every jil command: `--json` (exactly one JSON document on stdout, also on error),
 * human output rendered from the same typed result, progress on stderr, typed errors without a
 * stack trace unless `--debug`, and the exit code (0 ok, 1 failure, 2 usage). Nothing else exits.
 */
export abstract class JilCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    debug: Flags.boolean({description: 'Show stack traces of errors.', helpGroup: 'GLOBAL'}),
  }

  /** Human-readable rendering of the command's result (stdout). Without it, a --json-less run prints nothing. */
  protected render?(result: never): void

  /** A progress or success line for people: always stderr, so stdout stays the result. */
  protected progress(line: string): void {
    process.stderr.write(line + '\n')
  }

  override async _run<T>(): Promise<T> {
    const result = await super._run<T>()
    if (result !== undefined && !this.jsonEnabled() && this.render) this.render(result as never)
    return result
  }

  override logJson(json: unknown): void {
    process.stdout.write(JSON.stringify(json, null, 2) + '\n')
  }

  override toErrorJson(err: unknown): unknown {
    const e = toJilError(err)
    return {error: {code: e.code, message: e.message, ...(e.hint ? {hint: e.hint} : {}), ...(e.details ?? {})}}
  }

  override async catch(err: Error & {exitCode?: number}): Promise<never> {
    if (err instanceof Errors.ExitError) throw err
    const e = toJilError(err)
    if (this.jsonEnabled()) {
      this.logJson(this.toErrorJson(e))
    } else {
      process.stderr.write(`Error: ${e.message}\n`)
      if (e.hint) process.stderr.write(`Hint: ${e.hint}\n`)
    }
    if (this.argv.includes('--debug')) process.stderr.write(`${err.stack ?? String(err)}\n`)
    this.exit(e.exit)
  }
}

/** Turns anything thrown into a JilError: oclif parse errors are usage errors; the rest are bugs. */
export function toJilError(err: unknown): JilError {
  if (err instanceof JilError) return err
  if (err instanceof Errors.CLIError && 'parse' in err) {
    return new JilError('USAGE', firstLine(err.message), {exit: EXIT_USAGE, hint: 'see --help for the flags and arguments'})
  }
  if (err instanceof Errors.CLIError) {
    const exit = err.oclif?.exit === EXIT_USAGE ? EXIT_USAGE : EXIT_FAILURE
    return new JilError(exit === EXIT_USAGE ? 'USAGE' : 'FAILED', firstLine(err.message), {exit, hint: 'see --help'})
  }
  return new JilError('INTERNAL', `internal error: ${firstLine(messageOf(err))}`, {hint: 'this is a bug in jil; rerun with --debug and report the stack trace'})
}

/** oclif's parse errors span lines ("The following error occurred:", the errors, "See more help…"): keep the errors. */
function firstLine(s: string): string {
  const lines = s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^The following errors? occurred:?$/i.test(l) && !/^See more help with/i.test(l))
  return lines.length > 0 ? lines.join('; ') : s.trim()
}

/** Flags of every command that talks to a running HQ (DESIGN.md §11). */
export const hqFlags = {
  hq: Flags.string({description: 'HQ URL (default: the one in your user bundle).', env: 'JIL_HQ_URL', helpValue: 'URL', helpGroup: 'HQ'}),
  user: Flags.string({description: 'User bundle file (default: the profile jil hq init wrote).', env: 'JIL_USER', helpValue: 'FILE', helpGroup: 'HQ'}),
}
