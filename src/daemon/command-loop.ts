import {setTimeout as sleep} from 'node:timers/promises'

import type {Logger} from 'pino'

import type {NodeCommand} from '../shared/api.js'
import {JilError, messageOf} from '../shared/errors.js'

/**
 * The daemon's command loop: long-poll HQ for the node's commands, run them, poll again. A failed
 * poll (HQ away, a refused certificate) waits with a doubling backoff before reconnecting, so a fleet
 * never hammers an HQ that is down. `stop()` aborts the poll in flight and the backoff, and waits
 * for the commands being run (they watch the daemon's own abort signal).
 */

export type CommandLoopOptions = {
  /** One long-poll: resolves with the commands (maybe none) once HQ answers; rejects when aborted. */
  fetch(waitS: number, signal: AbortSignal): Promise<NodeCommand[]>
  /** Runs the commands (each once) and sends their results. */
  execute(commands: NodeCommand[]): Promise<void>
  log: Logger
  /** Seconds HQ may hold each poll (default 25, HQ's maximum). */
  waitS?: number
  /** Reconnect backoff after a failure (default 1 s doubling to 60 s). */
  backoff?: {minMs: number; maxMs: number}
}

export type CommandLoop = {
  /** Ends the loop: aborts the poll or backoff in flight, waits for commands being run. Idempotent. */
  stop(): Promise<void>
  /** Resolves when the loop has ended. */
  done: Promise<void>
}

export function startCommandLoop(o: CommandLoopOptions): CommandLoop {
  const abort = new AbortController()
  const waitS = o.waitS ?? 25
  const {minMs, maxMs} = o.backoff ?? {minMs: 1_000, maxMs: 60_000}

  const done = (async () => {
    let delay = minMs
    let failures = 0
    while (!abort.signal.aborted) {
      let commands: NodeCommand[]
      try {
        commands = await o.fetch(waitS, abort.signal)
        if (failures > 0) o.log.info({failures}, 'command long-poll reconnected')
        failures = 0
        delay = minMs
      } catch (err) {
        if (abort.signal.aborted) break
        failures++
        // The first failure and every tenth are logged: an HQ down for an hour is not 3,600 lines.
        if (failures === 1 || failures % 10 === 0) {
          o.log.warn({err: messageOf(err), code: err instanceof JilError ? err.code : undefined, failures, retry_ms: delay}, 'command long-poll failed; reconnecting')
        }
        await sleep(delay, undefined, {signal: abort.signal}).catch(() => {})
        delay = Math.min(maxMs, delay * 2)
        continue
      }
      if (commands.length === 0) continue
      try {
        await o.execute(commands)
      } catch (err) {
        // executeCommands answers each command itself; reaching here is the state dir failing.
        o.log.error({err: messageOf(err)}, 'running fleet commands failed')
        await sleep(delay, undefined, {signal: abort.signal}).catch(() => {})
        delay = Math.min(maxMs, delay * 2)
      }
    }
  })()

  return {
    async stop() {
      abort.abort(new JilError('DAEMON_STOPPING', 'the daemon is stopping'))
      await done
    },
    done,
  }
}
