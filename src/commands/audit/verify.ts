import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type AuditVerifyResult = import('../../shared/audit-verify.js').AuditVerifyReport & {source: string}

export default class AuditVerify extends JilCommand {
  static override summary = 'Verify the whole audit ledger yourself: chain, Merkle roots, signed checkpoints.'
  static override description = `Streams every entry and checkpoint (from HQ, or from a file written by jil audit export) and re-walks the hash chain and the RFC 6962 tree locally, checking each checkpoint's signature and root against the pinned checkpoint key. HQ's own word is never taken. On tampering it names the first bad seq (or the range a re-hashed log hides it in) and exits 1.`
  static override examples = [
    '<%= config.bin %> audit verify',
    '<%= config.bin %> audit verify --file audit-2026-11.ndjson --checkpoint-key checkpoint.pub',
  ]

  static override flags = {
    ...hqFlags,
    file: Flags.string({description: 'Verify this export offline instead of asking HQ.', helpValue: 'FILE'}),
    'checkpoint-key': Flags.string({description: 'HQ\'s checkpoint public key (PEM) to verify against (default: the one pinned in your bundle).', helpValue: 'FILE'}),
    workers: Flags.integer({description: 'Worker threads hashing entries (0 = all on the main thread).', default: 2, min: 0, max: 64}),
  }

  async run(): Promise<AuditVerifyResult> {
    const {flags} = await this.parse(AuditVerify)
    const audit = await import('../../cli/audit.js')
    const pinned = await audit.pinnedCheckpointKey(flags['checkpoint-key'], flags.user)
    // Hashing runs on worker threads (dist/workers/audit-hash.js, beside dist/commands/).
    const parallel = {workerUrl: new URL('../../workers/audit-hash.js', import.meta.url), workers: flags.workers}
    if (flags.file) return {...audit.assertVerified(await audit.verifyFromFile(flags.file, pinned, parallel)), source: flags.file}
    const {openHqSession} = await import('../../cli/hq-session.js')
    const {client} = await openHqSession(flags)
    try {
      return {...audit.assertVerified(await audit.verifyFromHq(client, pinned, parallel)), source: client.baseUrl}
    } finally {
      await client.close()
    }
  }

  protected override render(r: AuditVerifyResult): void {
    this.progress(`Verified ${r.entries} entries and ${r.checkpoints} signed checkpoints from ${r.source}`)
    this.log(
      keyValues([
        ['tree_size', r.tree_size],
        ['root_hash', r.root_hash],
        ['latest_checkpoint', r.latest_checkpoint ? `size ${r.latest_checkpoint.tree_size} at ${r.latest_checkpoint.time}` : null],
        ['checkpoint_key', r.latest_checkpoint?.key_id],
      ]),
    )
  }
}
