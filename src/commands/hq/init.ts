import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqInitResult = import('../../hq/init.js').HqInitResult

export default class HqInit extends JilCommand {
  static override summary = 'Create an HQ: CA, server certificate, image-signing key and the first admin.'
  static override description = `Creates, in a new or empty --data-dir, the CA (ECDSA P-256), HQ's TLS certificate (SAN = the --hostname values plus localhost and 127.0.0.1), the Ed25519 image-signing key and a first admin user bundle, which is also saved as the CLI's default profile. Prints the CA fingerprint nodes pin when they join.`
  static override examples = [
    '<%= config.bin %> hq init --data-dir /var/lib/jil-hq --hostname hq.example.com',
    '<%= config.bin %> hq init --data-dir ./hq --database-url postgres://jil@db/jil',
  ]

  static override flags = {
    'data-dir': Flags.string({description: 'Directory for HQ\'s keys, config and embedded database.', required: true, env: 'JIL_HQ_DATA_DIR', helpValue: 'DIR'}),
    hostname: Flags.string({description: 'A DNS name or IP nodes and users reach HQ at (repeatable).', multiple: true, default: [], helpValue: 'HOST'}),
    'database-url': Flags.string({description: 'Store HQ\'s state in this PostgreSQL database instead of the embedded one.', env: 'JIL_DATABASE_URL', helpValue: 'URL'}),
    url: Flags.string({description: 'HQ URL written into the admin bundle (default https://<first hostname>:8443).', helpValue: 'URL'}),
    profile: Flags.boolean({description: 'Save the admin bundle as the CLI\'s default profile.', default: true, allowNo: true}),
    force: Flags.boolean({description: 'Replace an existing HQ in --data-dir (its keys and embedded database are lost).'}),
  }

  async run(): Promise<HqInitResult> {
    const {flags} = await this.parse(HqInit)
    const [{initHq}, {normalizeDataDir}, {defaultProfilePath}, {systemClock}] = await Promise.all([
      import('../../hq/init.js'),
      import('../../hq/datadir.js'),
      import('../../shared/bundle.js'),
      import('../../shared/clock.js'),
    ])
    const dataDir = normalizeDataDir(flags['data-dir'])
    const first = flags.hostname[0] ?? '127.0.0.1'
    return initHq({
      dataDir,
      hostnames: flags.hostname,
      ...(flags['database-url'] ? {databaseUrl: flags['database-url']} : {}),
      force: flags.force,
      profilePath: flags.profile ? defaultProfilePath() : undefined,
      hqUrl: flags.url ?? `https://${first.includes(':') ? `[${first}]` : first}:8443`,
      clock: systemClock,
      progress: (l) => this.progress(l),
    })
  }

  protected override render(r: HqInitResult): void {
    this.progress(`HQ created in ${r.data_dir}`)
    this.log(
      keyValues([
        ['ca_fingerprint', r.ca_fingerprint],
        ['signing_key_id', r.signing_key_id],
        ['hq_url', r.hq_url],
        ['database', r.database],
        ['admin_bundle', r.admin_bundle],
        ['profile', r.profile],
      ]),
    )
    this.progress(`Next: jil hq serve --data-dir ${r.data_dir}; nodes join with --ca-fingerprint ${r.ca_fingerprint}`)
  }
}
