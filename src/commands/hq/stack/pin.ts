import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqStackPinResult = import('../../../cli/stack.js').StackPinResult

export default class HqStackPin extends JilCommand {
  static override summary = 'Pin the version a service runs on testnet or mainnet.'
  static override description = `The version needs a live signed manifest of the service's image on the track (jil hq promote). A lower version than the current pin is a rollback: pass --rollback, and your key (ops-lead or admin) signs {purpose: rollback, track, service, image, digest, version}; nodes refuse a downgrade without that signature. Devnet has no pins: it runs the newest signed devnet image.`
  static override examples = ['<%= config.bin %> hq stack pin --track mainnet settlement-api v95.3', '<%= config.bin %> hq stack pin --track mainnet settlement-api v95.2 --rollback']
  static override args = {
    service: Args.string({description: 'The service (as named in the stack spec).', required: true}),
    version: Args.string({description: 'The version, e.g. v95.3.', required: true}),
  }
  static override flags = {
    ...hqFlags,
    track: Flags.string({description: 'The track.', options: ['devnet', 'testnet', 'mainnet'], required: true}),
    rollback: Flags.boolean({description: 'Confirm a downgrade: sign the rollback with your key.'}),
  }

  async run(): Promise<HqStackPinResult> {
    const {args, flags} = await this.parse(HqStackPin)
    const [{pinStackService}, {withHq}] = await Promise.all([import('../../../cli/stack.js'), import('../../../cli/hq-session.js')])
    return withHq(flags, ({client, bundle}) =>
      pinStackService(client, bundle, {track: flags.track as 'devnet' | 'testnet' | 'mainnet', service: args.service, version: args.version, confirm: flags.rollback}),
    )
  }

  protected override render(r: HqStackPinResult): void {
    this.progress(`Pinned ${r.service} to ${r.version} on ${r.track}${r.rollback ? ' (rollback signed with your key)' : ''}`)
    this.log(keyValues([['track', r.track], ['service', r.service], ['version', r.version], ['digest', r.digest], ['from', r.from], ['rollback', r.rollback]]))
  }
}
