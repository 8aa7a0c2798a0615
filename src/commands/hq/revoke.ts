import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqRevokeResult = import('../../shared/api.js').NodeRevocation

export default class HqRevoke extends JilCommand {
  static override summary = 'Revoke a node: instant lockout, permanent.'
  static override description = 'The seed\'s DELETE /v1/fleet/nodes/:id. Marks the node revoked, adds its certificates to the CRL, refuses its serials from the next request on and closes its live connections before returning. The node id can never join again.'
  static override examples = ['<%= config.bin %> hq revoke SG-MAS-01 --reason "key compromise"']
  static override args = {node: Args.string({description: 'Node id.', required: true})}
  static override flags = {...hqFlags, reason: Flags.string({description: 'Why (recorded in the audit ledger).', required: true})}

  async run(): Promise<HqRevokeResult> {
    const {args, flags} = await this.parse(HqRevoke)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.revokeNode(args.node, flags.reason))
  }

  protected override render(r: HqRevokeResult): void {
    this.progress(`Revoked ${r.node_id}: ${r.serials.length} certificate(s) locked out`)
    this.log(keyValues([['node', r.node_id], ['revoked_at', r.revoked_at], ['serials', r.serials]]))
  }
}
