import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqUserRenewResult = import('../../../cli/identity.js').UserBundleResult

export default class HqUserRenew extends JilCommand {
  static override summary = 'Renew a user\'s certificate (a new key, the same role).'
  static override description = 'Your own bundle is replaced in place; renewing someone else\'s (users:manage) writes ./NAME.bundle.json or --out.'
  static override examples = ['<%= config.bin %> hq user renew alice']
  static override args = {name: Args.string({description: 'User name.', required: true})}
  static override flags = {...hqFlags, out: Flags.string({description: 'Where to write the renewed bundle.', helpValue: 'FILE'})}

  async run(): Promise<HqUserRenewResult> {
    const {args, flags} = await this.parse(HqUserRenew)
    const [{renewUserOnline}, {openHqSession}] = await Promise.all([import('../../../cli/identity.js'), import('../../../cli/hq-session.js')])
    const {client, bundle, bundlePath} = await openHqSession(flags)
    try {
      return await renewUserOnline(client, bundle, bundlePath, args.name, flags.out)
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqUserRenewResult): void {
    this.progress(`Renewed ${r.name} until ${r.not_after}`)
    this.log(keyValues([['user', r.name], ['role', r.role], ['serial', r.serial], ['expires', r.not_after], ['bundle', r.bundle]]))
  }
}
