import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'

export type HqKeysRetireResult = {key_id: string; retired_at: string}

export default class HqKeysRetire extends JilCommand {
  static override summary = 'Retire an old image-signing key: what it signed before now stays valid, nothing after.'
  static override args = {key: Args.string({description: 'The key id (16 hex).', required: true})}
  static override flags = {...hqFlags}

  async run(): Promise<HqKeysRetireResult> {
    const {args, flags} = await this.parse(HqKeysRetire)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqKeysRetireResult>('POST', `/v1/keys/${encodeURIComponent(args.key)}/retire`, {}))
  }

  protected override render(r: HqKeysRetireResult): void {
    this.log(`${r.key_id}\tretired ${r.retired_at}`)
  }
}
