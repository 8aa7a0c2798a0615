import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {table} from '../../cli/table.js'
import type {AuditEntry} from '../../shared/audit.js'

export type AuditLogResult = {entries: AuditEntry[]}

export default class AuditLog extends JilCommand {
  static override summary = 'Show the audit ledger, newest first.'
  static override description = 'Reads entries of HQ\'s append-only audit ledger (GET /v1/fleet/audit), filtered by actor, action, subject and time.'
  static override examples = [
    '<%= config.bin %> audit log --action image.promote --since 7d',
    '<%= config.bin %> audit log --actor ci-pipeline --limit 20 --json',
  ]

  static override flags = {
    ...hqFlags,
    actor: Flags.string({description: 'Only entries by this user or node id.', helpValue: 'ID'}),
    action: Flags.string({description: 'Only this action (e.g. image.push, cert.revoke).', helpValue: 'ACTION'}),
    subject: Flags.string({description: 'Only entries about this subject (node id, image@digest, …).', helpValue: 'SUBJECT'}),
    since: Flags.string({description: 'From this time: ISO 8601, or a duration back from now (24h, 7d).', helpValue: 'TIME'}),
    until: Flags.string({description: 'Before this time: ISO 8601 or a duration back from now.', helpValue: 'TIME'}),
    limit: Flags.integer({description: 'At most this many entries.', default: 50, min: 1, max: 1000}),
  }

  async run(): Promise<AuditLogResult> {
    const {flags} = await this.parse(AuditLog)
    const [{openHqSession}, {parseTimeFlag}, {isAuditAction}, {systemClock}, {usageError}] = await Promise.all([
      import('../../cli/hq-session.js'),
      import('../../cli/audit.js'),
      import('../../shared/audit.js'),
      import('../../shared/clock.js'),
      import('../../shared/errors.js'),
    ])
    if (flags.action && !isAuditAction(flags.action)) throw usageError('ACTION_UNKNOWN', `--action ${flags.action} is not an audit action`, 'e.g. image.push, image.promote, node.join, node.upgrade, cert.revoke')
    const {client} = await openHqSession(flags)
    try {
      const page = await client.auditPage({
        actor: flags.actor,
        action: flags.action,
        subject: flags.subject,
        since: flags.since && parseTimeFlag(flags.since, '--since', systemClock),
        until: flags.until && parseTimeFlag(flags.until, '--until', systemClock),
        order: 'desc',
        limit: flags.limit,
      })
      return {entries: page.entries}
    } finally {
      await client.close()
    }
  }

  protected override render(r: AuditLogResult): void {
    if (r.entries.length === 0) {
      this.progress('no audit entries match')
      return
    }
    this.log(
      table(
        r.entries.map((e) => ({
          seq: e.seq,
          time: e.time.replace(/\.\d+Z$/, 'Z'),
          actor: e.actor.type === 'user' ? `${e.actor.id} (${e.actor.role})` : `${e.actor.type}:${e.actor.id}`,
          action: e.action,
          subject: e.subject.length > 40 ? e.subject.slice(0, 39) + '…' : e.subject,
          details: compact(e.details),
        })),
        [
          {key: 'seq', header: 'seq'},
          {key: 'time', header: 'time'},
          {key: 'actor', header: 'actor'},
          {key: 'action', header: 'action'},
          {key: 'subject', header: 'subject'},
          {key: 'details', header: 'details'},
        ],
      ),
    )
  }
}

function compact(d: Record<string, unknown>): string {
  const s = Object.entries(d)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')
  return s.length > 70 ? s.slice(0, 69) + '…' : s
}
