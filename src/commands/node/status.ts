import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type NodeStatusResult = import('../../node/identity.js').NodeStatusResult

export default class NodeStatus extends JilCommand {
  static override summary = 'Show this node\'s identity, certificate expiry and whether HQ accepts it now.'
  static override description = `Reads the identity jil node join stored and asks HQ who it thinks this node is (GET /v1/whoami over mutual TLS). HQ refusing the certificate (revoked, expired) or being unreachable is reported in the result ("accepted": false with HQ's code), not as an error; a node that has not joined is an error.`
  static override examples = ['<%= config.bin %> node status', '<%= config.bin %> node status --json']

  static override flags = {
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<NodeStatusResult> {
    const {flags} = await this.parse(NodeStatus)
    const [{nodeStatus}, {resolveStateDir}, {systemClock}] = await Promise.all([
      import('../../node/identity.js'),
      import('../../node/config.js'),
      import('../../shared/clock.js'),
    ])
    return nodeStatus({stateDir: resolveStateDir(flags['state-dir']), clock: systemClock})
  }

  protected override render(r: NodeStatusResult): void {
    const c = r.cert
    this.log(
      keyValues([
        ['node_id', r.node_id],
        ['zone', r.zone],
        ['region', r.region],
        ['track', r.track],
        ['operator', r.operator],
        ['hq_url', r.hq_url],
        ['ca_fingerprint', r.ca_fingerprint],
        ['joined_at', r.joined_at],
        ['cert_serial', c.serial],
        ['cert_expires', `${c.not_after}${c.expired ? ' (EXPIRED)' : ''}`],
        ['renew_after', `${c.renew_after}${c.renewal_due && !c.expired ? ' (due now: jil node renew)' : ''}`],
        ['hq_accepts', r.hq.accepted ? 'yes' : `no: ${r.hq.code} (${r.hq.message})`],
      ]),
    )
  }
}
