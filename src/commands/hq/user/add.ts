import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'
import {ROLES} from '../../../shared/pki.js'

export type HqUserAddResult = import('../../../cli/identity.js').UserBundleResult

export default class HqUserAdd extends JilCommand {
  static override summary = 'Add a user: a client-certificate bundle with one role (90 days).'
  static override description = `Makes the user's key on this machine, has HQ sign a certificate for it (the role is recorded at HQ, which is authoritative, and copied into the certificate) and writes the bundle — cert, key, CA, HQ URL — to a 0600 file. Break-glass: with HQ stopped, --data-dir issues the bundle straight from HQ's data dir.`
  static override examples = [
    '<%= config.bin %> hq user add alice --role security-lead --out alice.bundle.json',
    '<%= config.bin %> hq user add rescue --role admin --data-dir /var/lib/jil-hq   # HQ stopped',
  ]

  static override args = {name: Args.string({description: 'User name (lower-case).', required: true})}
  static override flags = {
    ...hqFlags,
    role: Flags.string({description: 'The role.', options: [...ROLES], required: true}),
    out: Flags.string({description: 'Where to write the bundle (default ./NAME.bundle.json; never overwritten).', helpValue: 'FILE'}),
    'data-dir': Flags.string({description: 'Break-glass: issue offline from HQ\'s data dir while HQ is stopped.', helpValue: 'DIR'}),
  }

  async run(): Promise<HqUserAddResult> {
    const {args, flags} = await this.parse(HqUserAdd)
    const cli = await import('../../../cli/identity.js')
    if (flags['data-dir']) {
      const {normalizeDataDir} = await import('../../../hq/datadir.js')
      return cli.addUserOffline(normalizeDataDir(flags['data-dir']), args.name, flags.role, flags.out)
    }
    const {openHqSession} = await import('../../../cli/hq-session.js')
    const {client, bundle} = await openHqSession(flags)
    try {
      return await cli.addUserOnline(client, bundle, args.name, flags.role, flags.out)
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqUserAddResult): void {
    this.progress(`Added ${r.name} (${r.role}); give them ${r.bundle} over a safe channel`)
    this.log(keyValues([['user', r.name], ['role', r.role], ['serial', r.serial], ['expires', r.not_after], ['bundle', r.bundle]]))
  }
}
