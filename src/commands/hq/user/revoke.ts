import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqUserRevokeResult = {name: string; revoked_at: string; serials: string[]}

export default class HqUserRevoke extends JilCommand {
  static override summary = 'Revoke a user: every certificate they hold stops working at once. Irreversible.'
  static override examples = ['<%= config.bin %> hq user revoke bob --reason "left the company"']
  static override args = {name: Args.string({description: 'User name.', required: true})}
  static override flags = {...hqFlags, reason: Flags.string({description: 'Why (recorded in the audit ledger).', default: 'revoked by an admin'})}

  async run(): Promise<HqUserRevokeResult> {
    const {args, flags} = await this.parse(HqUserRevoke)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqUserRevokeResult>('DELETE', `/v1/users/${encodeURIComponent(args.name)}`, {reason: flags.reason}))
  }

  protected override render(r: HqUserRevokeResult): void {
    this.progress(`Revoked ${r.name}: ${r.serials.length} certificate(s) locked out`)
    this.log(keyValues([['user', r.name], ['revoked_at', r.revoked_at], ['serials', r.serials]]))
  }
}
