import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'

export type HqApproveResult = import('../../cli/releases.js').ApproveResult

export default class HqApprove extends JilCommand {
  static override summary = 'Approve an image for testnet or mainnet, signed with your own key.'
  static override description = 'Signs {purpose: approve, image, digest, track} with the key in your bundle; HQ keeps the signature with the release and any node can verify it. Whoever pushed the image cannot approve it; each user counts once.'
  static override examples = ['<%= config.bin %> hq approve registry.example.com/jil/settlement-api@sha256:… --track mainnet']
  static override args = {image: Args.string({description: 'IMAGE@sha256:DIGEST', required: true})}
  static override flags = {...hqFlags, track: Flags.string({description: 'The track you approve it for.', options: ['testnet', 'mainnet'], required: true})}

  async run(): Promise<HqApproveResult> {
    const {args, flags} = await this.parse(HqApprove)
    const [{approveRelease, parseImageAtDigest}, {openHqSession}] = await Promise.all([import('../../cli/releases.js'), import('../../cli/hq-session.js')])
    parseImageAtDigest(args.image)
    const {client, bundle} = await openHqSession(flags)
    try {
      return await approveRelease(client, bundle, args.image, flags.track as 'testnet' | 'mainnet')
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqApproveResult): void {
    this.progress(`Approved for ${r.track}`)
    this.log(`${r.digest}\t${r.track}\tapprovers: ${r.approvers.join(', ')}`)
  }
}
