import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqWhoamiResult = import('../../shared/api.js').WhoAmI & {hq_url: string}

export default class HqWhoami extends JilCommand {
  static override summary = 'Show who you are to HQ (user, role, certificate).'
  static override description = 'Calls HQ over mutual TLS with your user bundle and prints the principal HQ derives from your client certificate.'
  static override examples = ['<%= config.bin %> hq whoami', '<%= config.bin %> hq whoami --user ./alice.bundle.json --hq https://hq.example.com:8443 --json']

  static override flags = {...hqFlags}

  async run(): Promise<HqWhoamiResult> {
    const {flags} = await this.parse(HqWhoami)
    const {openHqSession} = await import('../../cli/hq-session.js')
    const {client} = await openHqSession(flags)
    try {
      return {...(await client.whoami()), hq_url: client.baseUrl}
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqWhoamiResult): void {
    this.log(
      keyValues([
        [r.kind, r.name],
        ...(r.role ? ([['role', r.role]] as [string, string][]) : []),
        ...(r.zone ? ([['zone', r.zone]] as [string, string][]) : []),
        ['serial', r.serial],
        ['cert_expires', r.not_after],
        ['hq', r.hq_url],
      ]),
    )
  }
}
