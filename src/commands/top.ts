import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../base-command.js'
import {usageError} from '../shared/errors.js'

export default class Top extends JilCommand {
  static override summary = "The fleet dashboard in the terminal: live nodes, images, alerts, security and broadcasts."
  static override description =
    "The seed's fleet operations dashboard, keyboard-driven like k9s: 1–7 or :name switch views (overview, nodes, images, alerts, security, broadcast, help), / filters nodes, Enter opens one, ? shows the keys, q quits. Data arrives live from HQ's event stream; when it drops the header says STALE and jil top reconnects. Actions (pause, upgrade, approve, ack, broadcast…) ask for confirmation and run with your bundle's role; --readonly hides them all. NO_COLOR turns colours off. Needs a terminal: for scripts use jil fleet nodes --json."
  static override examples = ['<%= config.bin %> top', '<%= config.bin %> top --readonly', '<%= config.bin %> top --user ./viewer.bundle.json --hq https://hq.example.com:8443']
  static override flags = {
    ...hqFlags,
    readonly: Flags.boolean({description: 'Hide every action that changes something (look, do not touch).', env: 'JIL_TOP_READONLY'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Top)
    if (this.jsonEnabled()) {
      throw usageError('JSON_UNSUPPORTED', 'jil top is an interactive dashboard and has no --json output', 'for JSON use jil fleet nodes --json, jil alerts list --json or jil fleet rollout status --json')
    }
    if (!process.stdout.isTTY || !process.stdin.isTTY) {
      throw usageError('NOT_A_TTY', 'jil top needs a terminal (stdin and stdout must be a TTY)', 'in scripts and pipes use jil fleet nodes --json')
    }
    // React's development build checks and warns on every render (several times slower); a user's
    // dashboard runs the production one unless NODE_ENV says otherwise. Read when react loads, below.
    process.env.NODE_ENV ??= 'production'
    // Ink draws only the last frame when it thinks it runs in CI (is-in-ci reads CI and
    // CONTINUOUS_INTEGRATION when ink loads). This is a live dashboard on a TTY, checked above: a
    // CI variable left in the user's shell (or a CI job's tmux) must not blank the screen.
    delete process.env.CI
    delete process.env.CONTINUOUS_INTEGRATION
    // Ink and React load here only: every other command, and --version, stays free of them.
    const [{openHqSession}, {hqSource}, {App}, {render}, {createElement}] = await Promise.all([
      import('../cli/hq-session.js'),
      import('../tui/source.js'),
      import('../tui/app.js'),
      import('ink'),
      import('react'),
    ])
    const {client, bundle} = await openHqSession(flags)
    try {
      // no-color.org: NO_COLOR set to anything but the empty string turns colours off.
      const colors = !process.env.NO_COLOR
      // The alternate screen, as full-screen terminal tools use it: the shell's scrollback is left as it was.
      process.stdout.write('\x1b[?1049h')
      try {
        const app = render(createElement(App, {source: hqSource(client, bundle), readonly: flags.readonly, colors}), {exitOnCtrlC: true})
        await app.waitUntilExit()
      } finally {
        process.stdout.write('\x1b[?1049l')
      }
    } finally {
      await client.close()
    }
  }
}
