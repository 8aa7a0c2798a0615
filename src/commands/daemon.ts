import {Flags} from '@oclif/core'

import {JilCommand} from '../base-command.js'

export type DaemonReadyLine = {node_id: string; healthz: string; pid: number}

export default class Daemon extends JilCommand {
  static override summary = 'Run the node daemon: the four agents on their schedules, /healthz and /metrics.'
  static override description = `Runs on every node (systemd: jil.service). Loads the node identity (the node must have joined), runs the health agent every 60 s, security every 6 h, update every 4 h and maintenance daily at 02:00 UTC (JIL_HEALTH_EVERY, JIL_SECURITY_EVERY, JIL_UPDATE_EVERY, JIL_MAINTENANCE_AT; up to JIL_JITTER of random delay), health and update also once at start. Each agent is single-flight: a tick that finds the previous run going is skipped and logged. Serves GET /healthz (200 only when the node is active, running, and its critical services are healthy; else 503 with the reasons) and GET /metrics (Prometheus) on a local port. SIGTERM or Ctrl-C stops scheduling, waits for the runs in flight, and exits 0. Logs are JSON on stderr. With --json, prints one line {"node_id", "healthz", "pid"} once listening.`
  static override examples = ['<%= config.bin %> daemon', '<%= config.bin %> daemon --state-dir /var/lib/jil --healthz-listen 127.0.0.1:9464']

  static override flags = {
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
    'healthz-listen': Flags.string({description: 'Where /healthz and /metrics listen (port 0 picks a free one) [default: 127.0.0.1:9464].', env: 'JIL_HEALTHZ_LISTEN', helpValue: 'HOST:PORT'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Daemon)
    const [{runDaemon, daemonLogger}, {resolveStateDir}, {loadSettings, SETTINGS_ENV}, {systemClock}] = await Promise.all([
      import('../daemon/daemon.js'),
      import('../node/config.js'),
      import('../node/settings.js'),
      import('../shared/clock.js'),
    ])
    const stateDir = resolveStateDir(flags['state-dir'])
    // Flags over the environment over node.env.
    const settings = await loadSettings(stateDir, {...process.env, ...(flags['healthz-listen'] ? {[SETTINGS_ENV.healthzListen]: flags['healthz-listen']} : {})})
    const log = await daemonLogger()
    const stop = new AbortController()
    // Installed before the daemon starts, so a SIGTERM during start-up also ends in an orderly stop.
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({signal}, 'signal received')
      stop.abort()
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
    try {
      const daemon = await runDaemon({stateDir, settings, clock: systemClock, log, version: this.config.version, signal: stop.signal})
      const ready: DaemonReadyLine = {...daemon.ready, pid: process.pid}
      if (this.jsonEnabled()) process.stdout.write(JSON.stringify(ready) + '\n')
      else this.progress(`Node ${ready.node_id}: daemon running, /healthz and /metrics on ${ready.healthz} (pid ${ready.pid}); Ctrl-C stops it`)
      await daemon.stopped
    } finally {
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      log.flush()
    }
  }
}
