import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type NodeRenewResult = import('../../node/identity.js').NodeRenewResult

export default class NodeRenew extends JilCommand {
  static override summary = 'Renew this node\'s certificate now (the daemon does it at 2/3 of its lifetime).'
  static override description = `Makes a new key and asks HQ, over mutual TLS with the current certificate, to sign it; then replaces node.key and node.crt. A revoked or expired certificate cannot be renewed (CERT_REVOKED, CERT_EXPIRED): the stored identity is left as it was. With --if-due it renews only once 2/3 of the certificate's lifetime has passed, for cron.`
  static override examples = ['<%= config.bin %> node renew', '<%= config.bin %> node renew --if-due --json']

  static override flags = {
    'if-due': Flags.boolean({description: 'Renew only when 2/3 of the certificate\'s lifetime has passed.', env: 'JIL_RENEW_IF_DUE'}),
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<NodeRenewResult> {
    const {flags} = await this.parse(NodeRenew)
    const [{renewNode}, {resolveStateDir}, {systemClock}] = await Promise.all([
      import('../../node/identity.js'),
      import('../../node/config.js'),
      import('../../shared/clock.js'),
    ])
    return renewNode({stateDir: resolveStateDir(flags['state-dir']), clock: systemClock, ifDue: flags['if-due'], progress: (l) => this.progress(l)})
  }

  protected override render(r: NodeRenewResult): void {
    this.progress(r.renewed ? `Renewed ${r.node_id}'s certificate` : `${r.node_id}'s certificate is not due for renewal before ${r.renew_after}`)
    this.log(
      keyValues([
        ['node_id', r.node_id],
        ['cert_serial', r.serial],
        ...(r.previous_serial ? ([['previous_serial', r.previous_serial]] as [string, string][]) : []),
        ['cert_expires', r.not_after],
        ['renew_after', r.renew_after],
      ]),
    )
  }
}
