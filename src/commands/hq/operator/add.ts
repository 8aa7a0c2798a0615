import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'

export type HqOperatorResult = {name: string; kyc: string}

export default class HqOperatorAdd extends JilCommand {
  static override summary = 'Register a node-running organisation and its KYC status.'
  static override examples = ['<%= config.bin %> hq operator add "Helvetia Nodes AG" --kyc approved']
  static override args = {name: Args.string({description: 'Organisation name.', required: true})}
  static override flags = {...hqFlags, kyc: Flags.string({description: 'KYC status.', options: ['approved', 'pending', 'rejected'], required: true})}

  async run(): Promise<HqOperatorResult> {
    const {args, flags} = await this.parse(HqOperatorAdd)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqOperatorResult>('POST', '/v1/operators', {name: args.name, kyc: flags.kyc}))
  }

  protected override render(r: HqOperatorResult): void {
    this.log(`${r.name}\t${r.kyc}`)
  }
}
