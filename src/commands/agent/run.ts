import {Args, Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {table} from '../../cli/table.js'
import {AGENT_NAMES, type AgentName} from '../../shared/agents.js'
import type {AgentReport} from '../../shared/api.js'

export type AgentRunResult = AgentReport


export default class AgentRun extends JilCommand {
  static override summary = 'Run one node agent once (cron mode) and print its report.'
  static override description = `Runs the health, maintenance, security or update agent once, as the daemon would, with the node's identity from the state dir: the report is kept in <state-dir>/agents/NAME.json and sent to HQ. Exits 0 when the agent did its job (findings are data, not failures) and 1 when it could not (Docker or HQ unreachable, ...); with --json the report is printed either way. install-cron.sh registers the four agents in /etc/cron.d/jil; the health run also renews the node certificate when due, so a cron-only node never expires.`
  static override examples = ['<%= config.bin %> agent run health', '<%= config.bin %> agent run security --json --state-dir /var/lib/jil']

  static override args = {
    name: Args.string({description: 'The agent to run.', required: true, options: [...AGENT_NAMES]}),
  }

  static override flags = {
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<AgentRunResult> {
    const {args, flags} = await this.parse(AgentRun)
    // Cron pays this command's cold start every minute: everything heavy loads here, on demand.
    const [{createAgentContext, runAgent}, {resolveStateDir}, {loadSettings}, {systemClock}, {pino}] = await Promise.all([
      import('../../node/agents/run.js'),
      import('../../node/config.js'),
      import('../../node/settings.js'),
      import('../../shared/clock.js'),
      import('pino'),
    ])
    const stateDir = resolveStateDir(flags['state-dir'])
    const settings = await loadSettings(stateDir)
    const log = pino({level: process.env.JIL_LOG_LEVEL ?? 'warn', base: {svc: 'jil-agent', agent: args.name}}, pino.destination({fd: 2, sync: true}))
    // A SIGTERM (cron killed, shutdown) aborts long waits so an update restores before the process ends.
    const abort = new AbortController()
    const onSignal = () => abort.abort()
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
    const ctx = await createAgentContext({stateDir, settings, clock: systemClock, log, version: this.config.version, signal: abort.signal})
    let report: AgentReport
    try {
      report = await runAgent(args.name as AgentName, ctx)
    } finally {
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      await ctx.close()
    }
    if (!report.ok) {
      // The report is the answer even when the agent could not do its job: print it, then exit 1.
      if (this.jsonEnabled()) this.logJson(report)
      else this.render(report)
      this.exit(1)
    }
    return report
  }

  protected override render(r: AgentRunResult): void {
    const counts = (['critical', 'warning', 'info'] as const).map((s) => [s, r.findings.filter((f) => f.severity === s).length] as const).filter(([, n]) => n > 0)
    const tally = counts.length > 0 ? ` (${counts.map(([s, n]) => `${n} ${s}`).join(', ')})` : ''
    this.log(`${r.agent} on ${r.node_id}: ${r.ok ? 'ok' : 'FAILED'}: ${r.summary}${tally}`)
    if (r.findings.length > 0) {
      this.log(
        table(
          r.findings.map((f) => ({...f})),
          [
            {key: 'severity', header: 'severity'},
            {key: 'id', header: 'id'},
            {key: 'title', header: 'title'},
            {key: 'remediation', header: 'remediation'},
          ],
        ),
      )
    }
    if (r.error) this.progress(`Error ${r.error.code}: ${r.error.message}${typeof r.details.hint === 'string' ? `\nHint: ${r.details.hint}` : ''}`)
  }
}
