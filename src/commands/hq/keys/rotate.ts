import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqKeysRotateResult = import('../../../shared/signing-keys.js').ServedKey

export default class HqKeysRotate extends JilCommand {
  static override summary = 'Rotate the image-signing key: a new key, endorsed by the current one.'
  static override description = 'New manifests are signed with the new key. Manifests signed with the old key stay verifiable until it is retired (jil hq keys retire). Nodes learn the new key along the endorsement chain.'
  static override flags = {...hqFlags}

  async run(): Promise<HqKeysRotateResult> {
    const {flags} = await this.parse(HqKeysRotate)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqKeysRotateResult>('POST', '/v1/keys/rotate', {}))
  }

  protected override render(k: HqKeysRotateResult): void {
    this.progress(`New signing key ${k.key_id}, endorsed by ${k.endorsement?.signed_by}`)
    this.log(keyValues([['key_id', k.key_id], ['created_at', k.created_at], ['endorsed_by', k.endorsement?.signed_by]]))
  }
}
