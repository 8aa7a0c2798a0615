import {once} from 'node:events'

import {Flags} from '@oclif/core'

import {JilCommand} from '../base-command.js'
import {MAX_DEV_NODES} from '../dev/plan.js'

export type DevReadyLine = import('../dev/dev.js').DevReady

export default class Dev extends JilCommand {
  static override summary = 'Run the whole fleet on this machine: HQ, users, a signed demo release and N nodes across the 13 zones.'
  static override description = `Starts HQ on its embedded database, adds a user per role (bundles in <data-dir>/users), an approved operator, signs the demo release onto devnet and promotes it to testnet and mainnet with the approvals each needs, then joins --nodes nodes round-robin over the 13 zones with real keys and certificates and runs a daemon for each in this process. Nodes run their services in the local Docker engine when one answers (--docker auto), else as processes of this command (the no-container runtime). With PostgreSQL (--database-url, or Debian's server binaries for a private cluster) the nodes sync a demo table over the postgres-log transport. Writes the CLI profile, so jil top and jil fleet nodes work from another terminal at once. Ctrl-C stops everything (the nodes' containers are removed); a second run on the same --data-dir reuses it all. With --json, prints one line {url, ca_fingerprint, data_dir, nodes, docker, sync, profile, …} once ready.`
  static override examples = ['<%= config.bin %> dev', '<%= config.bin %> dev --nodes 5 --docker off', '<%= config.bin %> dev --data-dir /tmp/fleet --database-url postgres://postgres@127.0.0.1:5432/postgres --json']

  static override flags = {
    nodes: Flags.integer({description: 'How many nodes (round-robin over the 13 zones).', default: 20, min: 1, max: MAX_DEV_NODES, env: 'JIL_DEV_NODES'}),
    'data-dir': Flags.string({description: 'Where the dev fleet lives (default $XDG_STATE_HOME/jil/dev).', env: 'JIL_DEV_DATA_DIR', helpValue: 'DIR'}),
    docker: Flags.string({description: 'Run the nodes\' services in the Docker engine (auto: when DOCKER_HOST or /var/run/docker.sock answers).', options: ['auto', 'on', 'off'], default: 'auto', env: 'JIL_DEV_DOCKER'}),
    listen: Flags.string({description: 'Where HQ listens (default 127.0.0.1:7443, or a free port when taken; port 0 picks one).', env: 'JIL_DEV_LISTEN', helpValue: 'HOST:PORT'}),
    'database-url': Flags.string({description: 'PostgreSQL for event sync (databases jil_dev_log and jil_dev_<node> are created on it); default: a private cluster when PostgreSQL is installed.', env: 'JIL_DEV_DATABASE_URL', helpValue: 'URL'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Dev)
    const [{startDev}, {parseListen}, {systemClock}, {pino}, {join, resolve}, {homedir}] = await Promise.all([
      import('../dev/dev.js'),
      import('../hq/server.js'),
      import('../shared/clock.js'),
      import('pino'),
      import('node:path'),
      import('node:os'),
    ])
    // Bad input is refused before anything is opened.
    const listen = flags.listen ? parseListen(flags.listen) : undefined
    const dataDir = resolve(flags['data-dir'] ?? join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'jil', 'dev'))
    const logFile = join(dataDir, 'logs', 'dev.log')
    // HQ's and the daemons' JSON logs go to a file: the terminal keeps the few lines meant for people.
    const destination = pino.destination({dest: logFile, mkdir: true, sync: false})
    // Opened before anything can fail: an exit while the file is still opening makes pino throw on its way out.
    await once(destination, 'ready')
    const log = pino({level: process.env.JIL_LOG_LEVEL ?? 'info', redact: {paths: ['*.key', '*.token', '*.secret', '*.password', '*.database_url'], censor: '[redacted]'}}, destination)
    const stop = new AbortController()
    // The first Ctrl-C stops the fleet in order; from then on a second one quits at once (the default).
    let started = false
    const onSignal = () => {
      if (!started) this.progress('stopping once the step in flight ends… (Ctrl-C again quits at once)')
      stop.abort()
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
    // Installed before the fleet starts: a Ctrl-C during start-up also ends in an orderly stop.
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    try {
      const dev = await startDev({
        dataDir,
        nodes: flags.nodes,
        docker: flags.docker as 'auto' | 'on' | 'off',
        listen,
        databaseUrl: flags['database-url'],
        clock: systemClock,
        version: this.config.version,
        log,
        logFile,
        progress: (l) => this.progress(l),
        signal: stop.signal,
      })
      started = true
      for (const n of dev.notes) this.progress(`note: ${n}`)
      const ready: DevReadyLine = dev.ready
      if (this.jsonEnabled()) process.stdout.write(JSON.stringify(ready) + '\n')
      this.progress(nextSteps(ready))
      if (!stop.signal.aborted) await new Promise<void>((r) => stop.signal.addEventListener('abort', () => r(), {once: true}))
      this.progress('stopping the dev fleet… (Ctrl-C again quits at once)')
      await dev.stop()
      this.progress('stopped')
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      log.flush()
    }
  }
}

function nextSteps(r: DevReadyLine): string {
  const u = (name: string) => `--user ${r.users_dir}/${name}.bundle.json`
  const next = r.registry ? `${r.registry}/jil/demo:v1.1` : 'REGISTRY/jil/demo:TAG'
  return [
    '',
    `The dev fleet is up: HQ at ${r.url}, ${r.nodes} nodes (${r.docker === 'on' ? 'Docker' : 'no-container runtime'}, sync ${r.sync}).`,
    `The CLI profile ${r.profile} is the admin; other users' bundles are in ${r.users_dir}. Try, in another terminal:`,
    '  jil top                                   # the live dashboard',
    '  jil fleet nodes                           # every node, its zone, versions, last heartbeat',
    `  jil hq sign ${next} --version v1.1 --commit 0a1b2c3 ${u('ci-pipeline')}`,
    `  jil hq approve jil/demo@sha256:… --track testnet ${u('ops-lead')}; jil hq promote jil/demo@sha256:… --to testnet ${u('ops-lead')}`,
    `  jil hq approve jil/demo@sha256:… --track mainnet ${u('ops-lead')} (and ${u('security-lead')}); jil hq promote … --to mainnet`,
    '  jil fleet upgrade --jurisdiction CH/FINMA --image jil/demo@sha256:… --wait',
    `  jil hq revoke AE-ABU-01 --reason "lost laptop" ${u('security-lead')}`,
    '  jil audit log; jil audit verify',
    `  jil node sync status --state-dir ${r.data_dir}/nodes/CH-ZUG-01`,
    `Logs: ${r.log}. Ctrl-C stops everything; run jil dev again with the same --data-dir to pick it up.`,
  ].join('\n')
}
