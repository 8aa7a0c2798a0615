import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqTokenCreateResult = {node_id: string; zone: string; operator: string; track: string; token: string; expires_at: string}

export default class HqTokenCreate extends JilCommand {
  static override summary = 'Admit a node: record it as pending and issue its one-time join token.'
  static override description = 'The seed\'s POST /v1/fleet/nodes. The token is bound to the node id, zone, operator and release track, expires, and is stored at HQ only as a hash: this is the only time it is shown.'
  static override examples = ['<%= config.bin %> hq token create --node-id CH-ZUG-01 --jurisdiction CH/FINMA --operator "Helvetia Nodes AG" --ttl 24h']
  static override flags = {
    ...hqFlags,
    'node-id': Flags.string({description: 'The node id, e.g. CH-ZUG-01.', required: true}),
    jurisdiction: Flags.string({description: 'The zone, e.g. CH/FINMA.', required: true}),
    operator: Flags.string({description: 'The operator running the node.', required: true}),
    track: Flags.string({description: 'Release track.', options: ['devnet', 'testnet', 'mainnet'], default: 'mainnet'}),
    ttl: Flags.string({description: 'How long the token is valid (30m, 24h, 7d).', default: '24h'}),
  }

  async run(): Promise<HqTokenCreateResult> {
    const {flags} = await this.parse(HqTokenCreate)
    const [{parseTtl}, {openHqSession}] = await Promise.all([import('../../../cli/identity.js'), import('../../../cli/hq-session.js')])
    const ttl = parseTtl(flags.ttl)
    const {client} = await openHqSession(flags)
    try {
      return await client.request<HqTokenCreateResult>('POST', '/v1/fleet/nodes', {
        node_id: flags['node-id'],
        zone: flags.jurisdiction,
        operator: flags.operator,
        track: flags.track,
        ttl_seconds: Math.round(ttl / 1000),
      })
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqTokenCreateResult): void {
    this.progress(`Node ${r.node_id} admitted (pending); the token is shown once and expires at ${r.expires_at}`)
    this.log(keyValues([['node', r.node_id], ['zone', r.zone], ['operator', r.operator], ['track', r.track], ['token', r.token], ['expires_at', r.expires_at]]))
  }
}
