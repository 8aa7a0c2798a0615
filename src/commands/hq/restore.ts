import {Args, Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqRestoreResult = import('../../hq/backup/restore.js').HqRestoreResult

export default class HqRestore extends JilCommand {
  static override summary = 'Restore HQ from an archive of jil hq backup, into an empty data dir and an empty database.'
  static override description = `Verifies the whole archive first (passphrase, every member's SHA-256, the schema version, the CA), then creates the schema and loads every table in one transaction, writes the data dir files with their modes, and commits only once the restored audit ledger's hash chain and checkpoint signatures verify. Nothing is left behind on failure. Without --database-url the state goes into the embedded database in the data dir.`
  static override examples = [
    '<%= config.bin %> hq restore /backups/hq-2026-11-27.jilbak --data-dir /var/lib/jil-hq --database-url postgres://jil@db/jil_restored --passphrase-file /etc/jil/backup.pass',
    '<%= config.bin %> hq restore hq.jilbak --data-dir ./hq-restored',
  ]

  static override args = {file: Args.string({description: 'The archive jil hq backup wrote.', required: true})}
  static override flags = {
    'data-dir': Flags.string({description: 'A new or empty directory for the restored HQ.', required: true, helpValue: 'DIR'}),
    'database-url': Flags.string({description: 'An empty PostgreSQL database to restore into (default: the embedded database in --data-dir).', env: 'JIL_DATABASE_URL', helpValue: 'URL'}),
    'passphrase-file': Flags.string({description: 'The passphrase the archive was encrypted with, in a 0600 file.', env: 'JIL_BACKUP_PASSPHRASE_FILE', helpValue: 'FILE'}),
  }

  async run(): Promise<HqRestoreResult> {
    const {args, flags} = await this.parse(HqRestore)
    const [{restoreHq}, {readPassphraseFile}, {normalizeDataDir}, {systemClock}, {resolve}] = await Promise.all([
      import('../../hq/backup/restore.js'),
      import('../../hq/backup/passphrase.js'),
      import('../../hq/datadir.js'),
      import('../../shared/clock.js'),
      import('node:path'),
    ])
    const passphrase = flags['passphrase-file'] ? await readPassphraseFile(flags['passphrase-file']) : undefined
    return restoreHq({
      file: resolve(args.file),
      dataDir: normalizeDataDir(flags['data-dir']),
      databaseUrl: flags['database-url'] || undefined, // an empty JIL_DATABASE_URL means unset
      passphrase,
      clock: systemClock,
      progress: (l) => this.progress(l),
    })
  }

  protected override render(r: HqRestoreResult): void {
    this.log(
      keyValues([
        ['data_dir', r.data_dir],
        ['database', r.database],
        ['ca_fingerprint', r.ca_fingerprint],
        ['archive_created_at', r.created_at],
        ['tables', Object.keys(r.tables).length],
        ['audit_entries', `${r.audit_entries} (chain and ${r.audit_checkpoints} checkpoints verified)`],
        ['files', r.files],
      ]),
    )
    this.progress(`Next: jil hq serve --data-dir ${r.data_dir}`)
  }
}
