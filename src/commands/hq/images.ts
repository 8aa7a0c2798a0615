import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {table} from '../../cli/table.js'

export type HqImagesResult =
  | {images: import('../../cli/releases.js').ImageListRow[]}
  | {unsigned: {repository: string; tag: string; digest: string}[]}

export default class HqImages extends JilCommand {
  static override summary = 'List signed images per track, or the registry\'s unsigned digests.'
  static override examples = ['<%= config.bin %> hq images --track mainnet', '<%= config.bin %> hq images --unsigned --registry registry.example.com']
  static override flags = {
    ...hqFlags,
    track: Flags.string({description: 'Only this track.', options: ['devnet', 'testnet', 'mainnet']}),
    unsigned: Flags.boolean({description: 'Walk the registry and list every digest without a live signed manifest.'}),
    registry: Flags.string({description: 'The registry to walk with --unsigned (default: HQ\'s configured one).', helpValue: 'HOST:PORT'}),
  }

  async run(): Promise<HqImagesResult> {
    const {flags} = await this.parse(HqImages)
    const {openHqSession} = await import('../../cli/hq-session.js')
    const {client} = await openHqSession(flags)
    try {
      if (flags.unsigned) return await client.request('GET', `/v1/images/unsigned${flags.registry ? `?registry=${encodeURIComponent(flags.registry)}` : ''}`)
      return await client.request('GET', `/v1/images${flags.track ? `?track=${flags.track}` : ''}`)
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqImagesResult): void {
    if ('unsigned' in r) {
      if (r.unsigned.length === 0) this.progress('every digest in the registry is signed')
      else this.log(table(r.unsigned, [{key: 'repository', header: 'repository'}, {key: 'tag', header: 'tag'}, {key: 'digest', header: 'digest'}]))
      return
    }
    this.log(
      table(
        r.images.map((i) => ({...i, digest: i.digest.slice(0, 19), approvers: i.approvers.join(','), status: i.deprecated ? `deprecated: ${i.deprecated.reason}` : 'live'})),
        [
          {key: 'image', header: 'image'},
          {key: 'version', header: 'version'},
          {key: 'digest', header: 'digest'},
          {key: 'track', header: 'track'},
          {key: 'approvals', header: 'approvals'},
          {key: 'signed_by', header: 'signed by'},
          {key: 'status', header: 'status'},
        ],
      ),
    )
  }
}
