import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'

export type HqCaExportResult = import('../../../cli/identity.js').CaExportResult

export default class HqCaExport extends JilCommand {
  static override summary = 'Export HQ\'s CA (and CRL) for brokers and peers.'
  static override description = 'Fetches the CA certificate (checked against the fingerprint pinned in your bundle) and, with --crl, the current CRL. Prints the PEM, or writes ca.crt and crl.pem into --out DIR.'
  static override examples = ['<%= config.bin %> hq ca export --crl --out /etc/redpanda/jil']
  static override flags = {...hqFlags, crl: Flags.boolean({description: 'Also export the CRL.'}), out: Flags.string({description: 'Directory to write ca.crt (and crl.pem) into.', helpValue: 'DIR'})}

  async run(): Promise<HqCaExportResult> {
    const {flags} = await this.parse(HqCaExport)
    const [{exportCa}, {openHqSession}] = await Promise.all([import('../../../cli/identity.js'), import('../../../cli/hq-session.js')])
    const {client, bundle} = await openHqSession(flags)
    try {
      return await exportCa(client, bundle, flags.crl, flags.out)
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqCaExportResult): void {
    if (r.files.length > 0) {
      this.progress(`Wrote ${r.files.join(', ')} (CA ${r.ca_fingerprint})`)
      return
    }
    process.stdout.write(r.ca + (r.crl ? r.crl.pem : ''))
  }
}
