import type {RunModeAction, RunModeChange} from '../../shared/api.js'
import type {Db} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import type {RunMode} from '../../shared/stack.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {notifyChanged} from '../events/hub.js'
import {actorOf} from '../identity/service.js'
import type {CommandService} from './commands.js'

/** The run mode each action sets. Resume and start both mean running: they undo pause and stop. */
export const RUN_MODE_OF: Readonly<Record<RunModeAction, RunMode>> = {stop: 'stopped', start: 'running', pause: 'paused', resume: 'running'}

/**
 * Run-mode actions (`POST /v1/fleet/nodes/:id/{stop,start,pause,resume}`): a change to the node's
 * desired state, never a loose command. The run mode lives in `nodes.run_mode`, so the node's next
 * desired state carries it (its content changed: the sequence goes up) and it survives a reboot of
 * the node. In the same transaction: the audit entry and a `refresh` command, so the node acts now
 * rather than at its next update run.
 */
export class RunModeActions {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly commands: CommandService,
  ) {}

  async apply(p: Principal, nodeId: string, action: RunModeAction): Promise<RunModeChange> {
    const to = RUN_MODE_OF[action]
    const out = await this.db.transaction(async (tx): Promise<RunModeChange> => {
      const {rows} = await tx.query<{status: string; run_mode: RunMode}>('SELECT status, run_mode FROM nodes WHERE id = $1 FOR UPDATE', [nodeId])
      const n = rows[0]
      if (!n) throw new JilError('NODE_UNKNOWN', `no node ${nodeId}`, {status: 404, hint: 'see jil fleet nodes'})
      if (n.status === 'pending') throw new JilError('NODE_NOT_ACTIVE', `node ${nodeId} has not joined yet: there is nothing to ${action}`, {status: 409, hint: 'the node must join first (jil node join)'})
      if (n.status === 'revoked') throw new JilError('NODE_NOT_ACTIVE', `node ${nodeId} is revoked: it takes no orders`, {status: 409, hint: 'a revoked node is out of the fleet for good'})
      const changed = n.run_mode !== to
      if (changed) await tx.query('UPDATE nodes SET run_mode = $2 WHERE id = $1', [nodeId, to])
      if (changed) await notifyChanged(tx, 'nodes', [nodeId])
      const [cmd] = await this.commands.insert(tx, p, [nodeId], 'refresh')
      await this.ledger.append(tx, {actor: actorOf(p), action: `node.${action}`, subject: nodeId, details: {from: n.run_mode, to, changed, command_id: cmd!.id}})
      return {
        node_id: nodeId,
        action,
        run_mode: to,
        previous_run_mode: n.run_mode,
        changed,
        command_id: cmd!.id,
        message: changed ? `${nodeId}: run mode ${n.run_mode} → ${to}; refresh sent` : `${nodeId} is already ${to}; refresh sent`,
      }
    })
    this.commands.wake([nodeId])
    return out
  }
}
