import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'

export type HqOperatorSetResult = {name: string; kyc: string}

export default class HqOperatorSet extends JilCommand {
  static override summary = 'Change an operator\'s KYC status.'
  static override examples = ['<%= config.bin %> hq operator set "Helvetia Nodes AG" --kyc rejected']
  static override args = {name: Args.string({description: 'Organisation name.', required: true})}
  static override flags = {...hqFlags, kyc: Flags.string({description: 'KYC status.', options: ['approved', 'pending', 'rejected'], required: true})}

  async run(): Promise<HqOperatorSetResult> {
    const {args, flags} = await this.parse(HqOperatorSet)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqOperatorSetResult>('PATCH', `/v1/operators/${encodeURIComponent(args.name)}`, {kyc: flags.kyc}))
  }

  protected override render(r: HqOperatorSetResult): void {
    this.log(`${r.name}\t${r.kyc}`)
  }
}
