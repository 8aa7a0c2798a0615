import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'

export type HqServeReady = {url: string; ca_fingerprint: string}

export default class HqServe extends JilCommand {
  static override summary = 'Run HQ: the HTTPS API with mutual TLS.'
  static override description = `Serves HQ's API on one HTTPS listener. Every route but a short anonymous list (the CA, the CRL, node join) needs a client certificate issued by HQ's CA. Stops gracefully on SIGTERM or Ctrl-C. With --json, prints one line {"url", "ca_fingerprint"} once listening.`
  static override examples = ['<%= config.bin %> hq serve --data-dir /var/lib/jil-hq --listen 0.0.0.0:8443']

  static override flags = {
    'data-dir': Flags.string({description: 'The directory jil hq init created.', required: true, env: 'JIL_HQ_DATA_DIR', helpValue: 'DIR'}),
    listen: Flags.string({description: 'Address to listen on (port 0 picks a free one).', default: '127.0.0.1:8443', env: 'JIL_HQ_LISTEN', helpValue: 'HOST:PORT'}),
    'database-url': Flags.string({description: 'PostgreSQL URL (default: as given to jil hq init, else the embedded database).', env: 'JIL_DATABASE_URL', helpValue: 'URL'}),
    'rollout-tick-ms': Flags.integer({description: 'How often rollouts are advanced, in milliseconds.', env: 'JIL_ROLLOUT_TICK_MS', min: 100, default: 2000, hidden: true}),
    'alert-every-ms': Flags.integer({description: 'How often the alert rules are evaluated, in milliseconds.', env: 'JIL_ALERT_EVERY_MS', min: 1000, default: 60_000, hidden: true}),
    'webhook-poll-ms': Flags.integer({description: 'How often due webhook deliveries are looked for, in milliseconds.', env: 'JIL_WEBHOOK_POLL_MS', min: 50, default: 5000, hidden: true}),
    'webhook-backoff-ms': Flags.integer({description: 'The wait after a failed webhook attempt (then ×4 each), in milliseconds.', env: 'JIL_WEBHOOK_BACKOFF_MS', min: 10, default: 10_000, hidden: true}),
    'registry-scan-ms': Flags.integer({description: 'How often the registry is walked for unsigned digests, in milliseconds (0: never).', env: 'JIL_REGISTRY_SCAN_MS', min: 0, default: 600_000, hidden: true}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(HqServe)
    const [{startHq, parseListen}, {normalizeDataDir}, {hqLogger}, {systemClock}] = await Promise.all([
      import('../../hq/server.js'),
      import('../../hq/datadir.js'),
      import('../../hq/logger.js'),
      import('../../shared/clock.js'),
    ])
    const listen = parseListen(flags.listen)
    const logger = hqLogger()
    const hq = await startHq({
      dataDir: normalizeDataDir(flags['data-dir']),
      listen,
      databaseUrl: flags['database-url'],
      clock: systemClock,
      logger,
      version: this.config.version,
      rolloutTickMs: flags['rollout-tick-ms'],
      alertEveryMs: flags['alert-every-ms'],
      alerts: {registryScanMs: flags['registry-scan-ms']},
      webhooks: {pollMs: flags['webhook-poll-ms'], backoff: {baseMs: flags['webhook-backoff-ms']}},
    })
    const ready: HqServeReady = {url: hq.url, ca_fingerprint: hq.caFingerprint}
    if (this.jsonEnabled()) process.stdout.write(JSON.stringify(ready) + '\n')
    else this.progress(`HQ listening on ${hq.url} (CA ${hq.caFingerprint}); Ctrl-C stops it`)

    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        logger.info({signal}, 'shutting down')
        resolve()
      }
      process.once('SIGTERM', () => stop('SIGTERM'))
      process.once('SIGINT', () => stop('SIGINT'))
    })
    await hq.close()
    logger.info('stopped')
    logger.flush()
  }
}
