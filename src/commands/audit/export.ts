import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'

export type AuditExportResult = import('../../cli/audit.js').AuditExportResult

export default class AuditExport extends JilCommand {
  static override summary = 'Save the whole audit ledger to a file, to verify offline.'
  static override description = 'Writes HQ\'s audit export (NDJSON: a header, the signed checkpoints, every entry) to FILE. Anyone holding only HQ\'s checkpoint public key can verify it with jil audit verify --file FILE --checkpoint-key KEY.'
  static override examples = ['<%= config.bin %> audit export audit-2026-11.ndjson']

  static override args = {file: Args.string({description: 'Where to write the export (must not exist).', required: true})}
  static override flags = {...hqFlags}

  async run(): Promise<AuditExportResult> {
    const {args, flags} = await this.parse(AuditExport)
    const [{exportToFile}, {openHqSession}, {exists}, {JilError}] = await Promise.all([
      import('../../cli/audit.js'),
      import('../../cli/hq-session.js'),
      import('../../shared/files.js'),
      import('../../shared/errors.js'),
    ])
    if (await exists(args.file)) throw new JilError('FILE_EXISTS', `${args.file} already exists`, {hint: 'pick a new file name; an export never overwrites'})
    const {client} = await openHqSession(flags)
    try {
      return await exportToFile(client, args.file)
    } finally {
      await client.close()
    }
  }

  protected override render(r: AuditExportResult): void {
    this.progress(`Wrote ${r.entries} entries and ${r.checkpoints} checkpoints (${r.bytes} bytes) to ${r.file}`)
    this.log(r.file)
  }
}
