import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type NodeJoinResult = import('../../node/identity.js').NodeJoinResult

export default class NodeJoin extends JilCommand {
  static override summary = 'Join HQ with a one-time token: get this node\'s certificate.'
  static override description = `Fetches HQ's CA and checks it against --ca-fingerprint before sending anything else (never trust on first use), then sends a certificate request for the node key, a self-reported hardware report (machine id, CPU cores, memory, disk) and the operator. HQ checks the token, the operator's KYC, the zone and its hardware minimums, and issues the node certificate. The certificate, HQ's CA and the image-signing keys are stored in the state dir; the key never leaves it. Run jil node init first.`
  static override examples = [
    '<%= config.bin %> node join --hq https://hq.example.com:8443 --token jt_… --ca-fingerprint sha256:3f1c…',
    'JIL_JOIN_TOKEN=jt_… <%= config.bin %> node join --ca-fingerprint sha256:3f1c… --json',
  ]

  static override flags = {
    hq: Flags.string({description: 'HQ URL (default: the one jil node init recorded).', env: 'JIL_HQ_URL', helpValue: 'URL'}),
    token: Flags.string({description: 'The one-time join token from jil hq token create.', required: true, env: 'JIL_JOIN_TOKEN', helpValue: 'TOKEN'}),
    'ca-fingerprint': Flags.string({description: 'HQ\'s CA fingerprint, sha256:HEX, as jil hq init printed it.', required: true, env: 'JIL_CA_FINGERPRINT', helpValue: 'sha256:HEX'}),
    operator: Flags.string({description: 'The organisation running this node (default: the one jil node init recorded).', env: 'JIL_OPERATOR', helpValue: 'ORG'}),
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<NodeJoinResult> {
    const {flags} = await this.parse(NodeJoin)
    const [{joinNode}, {resolveStateDir}, {systemClock}] = await Promise.all([
      import('../../node/identity.js'),
      import('../../node/config.js'),
      import('../../shared/clock.js'),
    ])
    return joinNode({
      stateDir: resolveStateDir(flags['state-dir']),
      hqUrl: flags.hq,
      token: flags.token,
      caFingerprint: flags['ca-fingerprint'],
      operator: flags.operator,
      clock: systemClock,
      progress: (l) => this.progress(l),
    })
  }

  protected override render(r: NodeJoinResult): void {
    this.progress(`${r.rejoined ? 'Rejoined' : 'Joined'} HQ at ${r.hq_url} as ${r.node_id}`)
    for (const w of r.warnings) this.progress(`Warning: ${w}`)
    this.log(
      keyValues([
        ['node_id', r.node_id],
        ['zone', r.zone],
        ['track', r.track],
        ['operator', r.operator],
        ['hq_url', r.hq_url],
        ['ca_fingerprint', r.ca_fingerprint],
        ['cert_serial', r.serial],
        ['cert_expires', r.not_after],
        ['signing_keys', r.signing_key_ids],
      ]),
    )
  }
}
