import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import type {RollbackPlan} from '../../shared/api.js'
import {nodeArg} from './stop.js'

export type FleetRollbackResult = RollbackPlan

export default class FleetRollback extends JilCommand {
  static override summary = "Pin a node's services back to their previous signed version."
  static override description =
    "The previous version is the one the node ran before its last upgrade (else the newest live version on its track below what it runs). A downgrade needs your own signed rollback (ops-lead or admin): this command signs it with your bundle's key, HQ checks it and so does the node. The node acts at once (a refresh is sent)."
  static override examples = ['<%= config.bin %> fleet rollback CH-ZUG-01', '<%= config.bin %> fleet rollback CH-ZUG-01 --service settlement-api --dry-run']
  static override args = nodeArg
  static override flags = {
    ...hqFlags,
    service: Flags.string({description: 'Only this service.', helpValue: 'NAME'}),
    'dry-run': Flags.boolean({description: 'Show what would be rolled back, change nothing.'}),
  }

  async run(): Promise<FleetRollbackResult> {
    const {args, flags} = await this.parse(FleetRollback)
    const [{parseNodeId, rollbackNode}, {withHq}] = await Promise.all([import('../../cli/rollouts.js'), import('../../cli/hq-session.js')])
    const nodeId = parseNodeId(args.node)
    return withHq(flags, ({client, bundle}) => rollbackNode(client, bundle, nodeId, {service: flags.service, dryRun: flags['dry-run']}))
  }

  protected override render(r: FleetRollbackResult): void {
    for (const s of r.services) this.log(`${r.node_id} ${s.service}: ${s.from.version} → ${s.to.version} (${s.to.digest.slice(0, 19)}…)`)
    this.progress(r.applied ? `${r.node_id} rolled back; refresh sent (${r.command_id})` : 'dry run: nothing changed')
  }
}
