import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqSignResult = import('../../shared/manifest.js').ImageManifest

export default class HqSign extends JilCommand {
  static override summary = 'Sign an image onto devnet (the digest comes from the registry itself).'
  static override description = 'Given a tag, HQ asks the registry which manifest digest it points at (HEAD with the OCI and Docker media types) and signs that digest: moving the tag later does not move the signature.'
  static override examples = ['<%= config.bin %> hq sign registry.example.com/jil/settlement-api:v95.3 --version v95.3 --commit 9f2c1e0']
  static override args = {image: Args.string({description: 'REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:DIGEST', required: true})}
  static override flags = {
    ...hqFlags,
    version: Flags.string({description: 'Release version, e.g. v95.3.', required: true}),
    commit: Flags.string({description: 'The git commit it was built from.', required: true, env: 'JIL_COMMIT'}),
  }

  async run(): Promise<HqSignResult> {
    const {args, flags} = await this.parse(HqSign)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqSignResult>('POST', '/v1/images', {image: args.image, version: flags.version, commit: flags.commit}))
  }

  protected override render(m: HqSignResult): void {
    this.progress(`Signed ${m.image} ${m.version} onto devnet`)
    this.log(keyValues([['image', m.image], ['version', m.version], ['digest', m.digest], ['track', m.track], ['key_id', m.key_id]]))
  }
}
