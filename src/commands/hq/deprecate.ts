import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'

export type HqDeprecateResult = {digest: string; tracks: string[]; reason: string}

export default class HqDeprecate extends JilCommand {
  static override summary = 'Withdraw a signed image on every track: nodes then refuse it (DEPRECATED).'
  static override examples = ['<%= config.bin %> hq deprecate registry.example.com/jil/settlement-api@sha256:… --reason CVE-2026-0001']
  static override args = {image: Args.string({description: 'IMAGE@sha256:DIGEST', required: true})}
  static override flags = {...hqFlags, reason: Flags.string({description: 'Why (recorded and served to nodes).', required: true})}

  async run(): Promise<HqDeprecateResult> {
    const {args, flags} = await this.parse(HqDeprecate)
    const [{parseImageAtDigest}, {openHqSession}] = await Promise.all([import('../../cli/releases.js'), import('../../cli/hq-session.js')])
    const {digest} = parseImageAtDigest(args.image)
    const {client} = await openHqSession(flags)
    try {
      return await client.request<HqDeprecateResult>('POST', `/v1/images/${digest}/deprecate`, {reason: flags.reason})
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqDeprecateResult): void {
    this.log(`${r.digest}\tdeprecated on ${r.tracks.join(', ')}: ${r.reason}`)
  }
}
