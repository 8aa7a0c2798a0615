import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqPromoteResult = import('../../shared/manifest.js').ImageManifest

export default class HqPromote extends JilCommand {
  static override summary = 'Promote an image to testnet (1 approval) or mainnet (2, one a security-lead).'
  static override description = 'Creates the target track\'s manifest over the same digest. Mainnet requires the digest to be on testnet. Versions on a track only go up unless an admin passes --allow-downgrade (recorded).'
  static override examples = ['<%= config.bin %> hq promote registry.example.com/jil/settlement-api@sha256:… --to mainnet']
  static override args = {image: Args.string({description: 'IMAGE@sha256:DIGEST', required: true})}
  static override flags = {
    ...hqFlags,
    to: Flags.string({description: 'Target track.', options: ['testnet', 'mainnet'], required: true}),
    'allow-downgrade': Flags.boolean({description: 'Admin only: allow a lower version than the track\'s current one.'}),
  }

  async run(): Promise<HqPromoteResult> {
    const {args, flags} = await this.parse(HqPromote)
    const [{parseImageAtDigest}, {openHqSession}] = await Promise.all([import('../../cli/releases.js'), import('../../cli/hq-session.js')])
    const {digest} = parseImageAtDigest(args.image)
    const {client} = await openHqSession(flags)
    try {
      return await client.promoteImage(digest, flags.to as 'testnet' | 'mainnet', {allowDowngrade: flags['allow-downgrade']})
    } finally {
      await client.close()
    }
  }

  protected override render(m: HqPromoteResult): void {
    this.progress(`Promoted ${m.image} ${m.version} to ${m.track}`)
    this.log(keyValues([['image', m.image], ['version', m.version], ['digest', m.digest], ['track', m.track], ['approvals', m.approvals.length]]))
  }
}
