import {JilCommand, hqFlags} from '../../../base-command.js'
import {table} from '../../../cli/table.js'

export type HqKeysListResult = {current: string; keys: import('../../../shared/signing-keys.js').ServedKey[]}

export default class HqKeysList extends JilCommand {
  static override summary = 'List HQ\'s image-signing keys and their endorsement chain.'
  static override flags = {...hqFlags}

  async run(): Promise<HqKeysListResult> {
    const {flags} = await this.parse(HqKeysList)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqKeysListResult>('GET', '/v1/keys'))
  }

  protected override render(r: HqKeysListResult): void {
    this.log(
      table(
        r.keys.map((k) => ({key_id: k.key_id, status: k.key_id === r.current ? 'current' : k.retired_at ? `retired ${k.retired_at}` : 'valid', created_at: k.created_at, endorsed_by: k.endorsement?.signed_by ?? '(pinned at join)'})),
        [
          {key: 'key_id', header: 'key'},
          {key: 'status', header: 'status'},
          {key: 'created_at', header: 'created'},
          {key: 'endorsed_by', header: 'endorsed by'},
        ],
      ),
    )
  }
}
