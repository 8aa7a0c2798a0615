import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type HqBackupResult = import('../../hq/backup/backup.js').HqBackupResult

export default class HqBackup extends JilCommand {
  static override summary = 'Back up HQ: its data dir\'s keys and config and its whole database, into one archive.'
  static override description = `Writes one archive file (0600; written aside and renamed into place) with HQ's data dir files (CA, server and signing keys, certificates, config.json) and a dump of every table of HQ's database taken in one snapshot, so the audit ledger, its checkpoints and the fleet agree. With a PostgreSQL database HQ may keep serving; the embedded database needs HQ stopped. --passphrase-file encrypts the archive (scrypt + AES-256-GCM); without it the archive holds HQ's private keys in the clear.`
  static override examples = [
    '<%= config.bin %> hq backup --data-dir /var/lib/jil-hq --out /backups/hq-2026-11-27.jilbak --passphrase-file /etc/jil/backup.pass',
    '<%= config.bin %> hq backup --data-dir ./hq --out hq.jilbak   # embedded database: stop jil hq serve first',
  ]

  static override flags = {
    'data-dir': Flags.string({description: 'HQ\'s data dir.', required: true, env: 'JIL_HQ_DATA_DIR', helpValue: 'DIR'}),
    'database-url': Flags.string({description: 'PostgreSQL URL (default: as recorded in config.json, else the embedded database).', env: 'JIL_DATABASE_URL', helpValue: 'URL'}),
    out: Flags.string({description: 'The archive to write (never overwritten without --force).', required: true, helpValue: 'FILE'}),
    'passphrase-file': Flags.string({description: 'Encrypt with the passphrase in this 0600 file.', env: 'JIL_BACKUP_PASSPHRASE_FILE', helpValue: 'FILE'}),
    force: Flags.boolean({description: 'Replace an existing --out file (once the new archive is complete).'}),
  }

  async run(): Promise<HqBackupResult> {
    const {flags} = await this.parse(HqBackup)
    const [{backupHq}, {readPassphraseFile}, {normalizeDataDir}, {systemClock}, {resolve}] = await Promise.all([
      import('../../hq/backup/backup.js'),
      import('../../hq/backup/passphrase.js'),
      import('../../hq/datadir.js'),
      import('../../shared/clock.js'),
      import('node:path'),
    ])
    const passphrase = flags['passphrase-file'] ? await readPassphraseFile(flags['passphrase-file']) : undefined
    if (passphrase === undefined) this.progress('Warning: no --passphrase-file: the archive holds HQ\'s private keys (CA, signing, checkpoint) in the clear; keep it where only HQ\'s operators can read it')
    return backupHq({
      dataDir: normalizeDataDir(flags['data-dir']),
      databaseUrl: flags['database-url'] || undefined, // an empty JIL_DATABASE_URL means unset
      out: resolve(flags.out),
      passphrase,
      force: flags.force,
      clock: systemClock,
      version: this.config.version,
      progress: (l) => this.progress(l),
    })
  }

  protected override render(r: HqBackupResult): void {
    const rows = Object.values(r.tables).reduce((a, b) => a + b, 0)
    this.log(
      keyValues([
        ['file', r.file],
        ['bytes', r.bytes],
        ['encrypted', r.encrypted],
        ['database', r.database],
        ['tables', `${Object.keys(r.tables).length} (${rows} rows)`],
        ['audit_entries', r.audit_entries],
        ['files', r.files],
        ['created_at', r.created_at],
      ]),
    )
  }
}
