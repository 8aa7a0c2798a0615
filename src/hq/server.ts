import type {Server as HttpsServer} from 'node:https'
import {join} from 'node:path'
import type {AddressInfo} from 'node:net'

import type {FastifyInstance} from 'fastify'
import type {Logger} from 'pino'

import type {Clock} from '../shared/clock.js'
import type {Db} from '../shared/db/types.js'
import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {certFingerprint} from '../shared/pki.js'
import {readSecret, writeFileAtomic, writeSecret} from '../shared/files.js'
import {ed25519PublicPem, fileSigner} from '../shared/signing.js'
import {AlertEvaluator, type AlertSink} from './alerts/evaluator.js'
import {AlertMetrics} from './alerts/metrics.js'
import type {AlertConfig} from './alerts/rules.js'
import {AlertService} from './alerts/service.js'
import {WebhookDispatcher, WebhookOutbox, WebhookService, type WebhookDispatcherOptions} from './alerts/webhooks.js'
import {buildHqApp} from './app.js'
import {AuditLedger, AuditLoops} from './audit/ledger.js'
import {CertificateAuthority} from './ca/ca.js'
import {completeServerCertSwap, renewServerCertIfDue} from './ca/server-cert.js'
import {CrlService, RevocationWatcher, SocketRegistry} from './identity/revocation.js'
import {FleetEventHub} from './events/hub.js'
import type {EventRouteOptions} from './events/routes.js'
import {DEFAULT_JOIN_MINIMUMS, IdentityService, type JoinMinimums} from './identity/service.js'
import {HeartbeatIngester, HeartbeatRetention} from './fleet/heartbeats.js'
import {FleetService} from './fleet/service.js'
import {RunModeActions} from './fleet/actions.js'
import {CommandService} from './fleet/commands.js'
import {ConfigService} from './fleet/config.js'
import {RolloutDriver, RolloutService} from './fleet/rollouts.js'
import {ReleaseService} from './releases/service.js'
import {StackService} from './stack/service.js'
import {ensureTokenSigner, RegistryTokenIssuer} from './registry/token.js'
import {RegistryClient} from './registry/oci.js'
import {RegistryScan} from './alerts/registry-scan.js'
import {hqPath, lockDataDir, readHqConfig, readHqKeys, writeHqConfig, type DataDirLock} from './datadir.js'
import {assertDbBelongsTo, openHqDb} from './store/index.js'

export type HqServeOptions = {
  dataDir: string
  listen: {host: string; port: number}
  /** Overrides the database URL recorded at init; undefined = as recorded (or embedded). */
  databaseUrl?: string | undefined
  clock: Clock
  logger: Logger
  version: string
  /** How often the audit checkpoint is signed when the log grew (default 60 s). */
  checkpointEveryMs?: number
  /** How often the rollout driver advances open rollouts (default 2 s; env JIL_ROLLOUT_TICK_MS in `hq serve`). */
  rolloutTickMs?: number
  /** How often the alert rules are evaluated (default 60 s; env JIL_ALERT_EVERY_MS in `hq serve`). */
  alertEveryMs?: number
  /** Alert thresholds over the defaults, where notifications go (default: nowhere; webhooks plug in here), and how often the registry is walked for unsigned digests (default 10 min; 0: never). */
  alerts?: {config?: Partial<AlertConfig>; sink?: AlertSink; registryScanMs?: number}
  /** The webhook delivery loop: poll interval, backoff, attempt timeout (env JIL_WEBHOOK_* in `hq serve`); tests pass `wake: false` and tick by hand. */
  webhooks?: Pick<WebhookDispatcherOptions, 'pollMs' | 'wake' | 'backoff' | 'timeoutMs' | 'random'>
  /** The OCI registry HQ's images live in (for --unsigned); default config.json's registry. */
  registry?: string | undefined
  /** Hardware a joining node must report (default: config.json's join_minimums, else 2 cores, 2 GiB, 20 GiB). */
  joinMinimums?: JoinMinimums
  /** The live fleet stream: keepalive period and slow-client bound of GET /v1/events, coalescing period of heartbeats' node changes (tests shorten them). */
  events?: EventRouteOptions & {flushMs?: number}
}

export type RunningHq = {
  url: string
  caFingerprint: string
  app: FastifyInstance
  db: Db
  ledger: AuditLedger
  /** Live TLS sockets by client-certificate serial (what revocation closes). */
  sockets: SocketRegistry
  /** The rollout driver: tick() advances the open rollouts now (tests move an injected clock, then tick). */
  rollouts: RolloutDriver
  /** The alert evaluator: tick() evaluates the fleet now (tests move an injected clock, then tick). */
  alerts: AlertEvaluator
  /** The webhook delivery loop: tick() sends the deliveries due now. */
  webhooks: WebhookDispatcher
  /** The walk of HQ's registry behind the image-unsigned rule (undefined: no registry, or turned off); refresh() walks now. */
  registryScan: RegistryScan | undefined
  /** The live fleet stream's hub (GET /v1/events). */
  events: FleetEventHub
  /** Stops accepting, lets requests in flight finish, closes the database, releases the data dir. */
  close(): Promise<void>
}

export function parseListen(s: string): {host: string; port: number} {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(s)
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw new JilError('LISTEN_INVALID', `--listen ${JSON.stringify(s)} is not HOST:PORT`, {hint: 'e.g. --listen 127.0.0.1:8443 (port 0 picks a free one)', exit: 2})
  return {host: (m[1] ?? m[2])!, port}
}

/** Starts HQ on its data dir: takes the lock, opens and migrates the database, listens with mutual TLS. */
export async function startHq(o: HqServeOptions): Promise<RunningHq> {
  const config = await readHqConfig(o.dataDir)
  const lock: DataDirLock = await lockDataDir(o.dataDir, 'jil hq serve')
  let db: Db | undefined
  try {
    await completeServerCertSwap(o.dataDir)
    const keys = await readHqKeys(o.dataDir)
    if (certFingerprint(keys.caCert) !== config.ca_fingerprint) {
      throw new JilError('DATA_DIR_CORRUPT', `${hqPath(o.dataDir, 'caCert')} does not match the CA recorded in config.json`, {hint: 'restore the HQ data dir from a backup'})
    }
    const databaseUrl = o.databaseUrl ?? config.database_url
    db = await openHqDb(databaseUrl ? {databaseUrl} : {pgliteDir: hqPath(o.dataDir, 'db')})
    await assertDbBelongsTo(db, config.ca_fingerprint)
    const ledger = new AuditLedger(db, o.clock, await fileSigner(keys.checkpointKey), config.ca_fingerprint)
    const ca = await CertificateAuthority.load({certPem: keys.caCert, keyPem: keys.caKey}, o.clock)
    // HQ's own certificate renews itself at 2/3 of its lifetime: at start, and twice a day while serving.
    const renewed = await renewServerCertIfDue({dataDir: o.dataDir, ca, db, clock: o.clock, hostnames: config.hostnames, currentPem: keys.serverCert})
    if (renewed) {
      keys.serverCert = renewed.cert
      keys.serverKey = renewed.key
      o.logger.info('renewed HQ\'s server certificate')
    }
    const sockets = new SocketRegistry()
    const crl = new CrlService(db, {certPem: keys.caCert, keyPem: keys.caKey}, o.clock)
    await crl.latest()
    const signing = await fileSigner(keys.signingKey)
    const tokenSigner = await ensureTokenSigner(o.dataDir, ca)
    const registryTokens = new RegistryTokenIssuer(tokenSigner.keyPem, tokenSigner.certPem, o.clock)
    const hqRegistry = o.registry ?? config.registry
    // HQ is the token server of its own registry: walking it (--unsigned, the alert scan), HQ answers
    // the registry's challenge with a token it signs for itself. Other registries get Docker credentials only.
    let ownRegistry: Promise<RegistryClient> | undefined
    const registryFor = (registry: string): Promise<RegistryClient> =>
      registry === hqRegistry
        ? (ownRegistry ??= RegistryClient.for(registry, {tokenFor: (service, scope) => registryTokens.issueForHq(service, scope), clock: o.clock}))
        : RegistryClient.for(registry)
    const releases = new ReleaseService(db, signing, ed25519PublicPem(signing.publicKey), keys.caCert, ledger, o.clock, registryFor)
    await releases.registerKey()
    // Desired states and stack records are signed with the releases' current key: the one the
    // releases service switches to only once a rotation has committed.
    const signers = new Map([[signing.keyId, signing]])
    const currentSigner = () => {
      const s = signers.get(releases.currentKeyId)
      if (!s) throw new JilError('KEY_UNAVAILABLE', `the current signing key ${releases.currentKeyId} is not loaded`, {status: 500, hint: 'restart HQ'})
      return s
    }
    const commands = new CommandService(db, ledger, o.clock)
    const stacks = new StackService(db, currentSigner, keys.caCert, ledger, o.clock)
    const rolloutDriver: RolloutDriver = new RolloutDriver(db, () => rollouts, commands, {
      ...(o.rolloutTickMs !== undefined ? {everyMs: o.rolloutTickMs} : {}),
      onError: (err) => o.logger.error({err}, 'rollout driver failed; retrying'),
    })
    const rollouts = new RolloutService(db, ledger, o.clock, commands, stacks, () => rolloutDriver.kick())
    const alertMetrics = new AlertMetrics(db)
    // Every replica delivers (claims are SKIP LOCKED); the outbox is written by whichever evaluates.
    const webhookDispatcher = new WebhookDispatcher(db, o.clock, {
      ...o.webhooks,
      metrics: alertMetrics,
      onError: (err) => o.logger.error({err}, 'webhook delivery pass failed; retrying'),
    })
    const outbox = new WebhookOutbox(o.clock, () => webhookDispatcher.wake())
    const extraSink = o.alerts?.sink
    const sink: AlertSink = extraSink
      ? {
          opened: async (tx, a) => (await outbox.opened(tx, a), await extraSink.opened(tx, a)),
          resolved: async (tx, a) => (await outbox.resolved(tx, a), await extraSink.resolved(tx, a)),
        }
      : outbox
    // The registry's unsigned digests: walked in the background at most every 10 min (0: not at all).
    const registryScan =
      hqRegistry && o.alerts?.registryScanMs !== 0
        ? new RegistryScan(hqRegistry, () => registryFor(hqRegistry), o.clock, {
            ...(o.alerts?.registryScanMs !== undefined ? {everyMs: o.alerts.registryScanMs} : {}),
            metrics: alertMetrics,
            onError: (err) => o.logger.error({err}, 'registry walk for unsigned digests failed; keeping the previous one'),
          })
        : undefined
    const fleet = new FleetService(db, ledger, o.clock)
    const alertService = new AlertService(db, ledger, o.clock)
    // The live stream: one LISTEN for this process; heartbeats reach it coalesced, never one NOTIFY each.
    const events = new FleetEventHub(
      db,
      {
        nodes: (ids) => fleet.listNodes({ids}),
        alerts: (ids) => alertService.byIds(ids),
        rollouts: (ids) => rollouts.list({ids}),
        commands: (ids) => commands.byIds(ids),
      },
      {...(o.events?.flushMs !== undefined ? {flushMs: o.events.flushMs} : {}), onError: (err) => o.logger.error({err}, 'live fleet stream failed')},
    )
    HeartbeatIngester.of(db, {onStored: (nodeIds) => events.touched(nodeIds)})
    const alertEvaluator = new AlertEvaluator(db, stacks, o.clock, {
      ...(registryScan ? {registryScan} : {}),
      ...(o.alertEveryMs !== undefined ? {everyMs: o.alertEveryMs} : {}),
      ...(o.alerts?.config ? {config: o.alerts.config} : {}),
      sink,
      metrics: alertMetrics,
      onError: (err) => o.logger.error({err}, 'alert evaluation failed; retrying'),
      onSkip: () => o.logger.warn('alert evaluation still running at the next tick; skipped'),
      ledger,
    })
    const app = await buildHqApp({
      releases: {
        service: releases,
        registry: hqRegistry,
        tokens: registryTokens,
        // Rotation keeps the previous key beside the new one (signing-KEYID.key) and points config.json at the new one.
        keyStore: async (next, previousKeyId) => {
          const current = hqPath(o.dataDir, 'signingKey')
          const previousPem = await readSecret(current, 'image-signing key')
          await writeSecret(join(o.dataDir, `signing-${previousKeyId}.key`), previousPem)
          await writeSecret(current, next.privatePem)
          await writeFileAtomic(hqPath(o.dataDir, 'signingPub'), next.publicPem, 0o644)
          await writeHqConfig(o.dataDir, {...(await readHqConfig(o.dataDir)), signing_key_id: next.keyId})
          signers.set(next.keyId, await fileSigner(next.privatePem))
          return previousPem
        },
      },
      runtime: {
        stacks,
        fleet,
      },
      commands: {service: commands, actions: new RunModeActions(db, ledger, commands)},
      config: new ConfigService(db, ledger, commands, o.clock),
      rollouts,
      events: {hub: events, ...o.events},
      alerts: {service: alertService, metrics: alertMetrics, webhooks: new WebhookService(db, ledger, o.clock, () => webhookDispatcher.wake())},
      identity: {
        identity: new IdentityService(db, ca, ledger, o.clock, o.joinMinimums ?? config.join_minimums ?? DEFAULT_JOIN_MINIMUMS),
        crl,
        sockets,
        caFingerprint: config.ca_fingerprint,
        signingKeys: [{key_id: signing.keyId, public_key: ed25519PublicPem(signing.publicKey)}],
      },
      ledger,
      db,
      clock: o.clock,
      logger: o.logger,
      version: o.version,
      caCertPem: keys.caCert,
      tls: {key: keys.serverKey, cert: keys.serverCert, ca: keys.caCert},
    })
    try {
      await app.listen({host: o.listen.host, port: o.listen.port})
    } catch (err) {
      await app.close().catch(() => {})
      const code = systemCode(err)
      throw new JilError('LISTEN_FAILED', `cannot listen on ${o.listen.host}:${o.listen.port}: ${code ?? messageOf(err)}`, {
        hint: code === 'EADDRINUSE' ? 'another process uses that port; pick another --listen' : 'check the --listen address',
      })
    }
    const auditLoops = new AuditLoops(db, ledger, o.clock, {
      ...(o.checkpointEveryMs !== undefined ? {checkpointEveryMs: o.checkpointEveryMs} : {}),
      onError: (err) => o.logger.error({err}, 'audit sequencer failed; retrying'),
    })
    auditLoops.start()
    const watcher = new RevocationWatcher(db, sockets, o.clock, (err) => o.logger.error({err}, 'revocation watcher failed; retrying'))
    watcher.start()
    // Heartbeat history older than the retention period is pruned by one replica at a time.
    const heartbeatRetention = new HeartbeatRetention(db, o.clock, {onError: (err) => o.logger.error({err}, 'heartbeat history pruning failed; retrying')})
    heartbeatRetention.start()
    commands.startSweep(60_000, (err) => o.logger.error({err}, 'command expiry sweep failed; retrying'))
    // Rollouts are advanced by one replica (advisory lock); their state is in the database, so one resumes here after a restart.
    rolloutDriver.start()
    // The fleet's alert rules are evaluated by one replica (advisory lock), the others stand by.
    alertEvaluator.start()
    // Deliveries are in the database: those a previous run left pending go out on the first poll.
    webhookDispatcher.start()
    let currentCert = keys.serverCert
    const liveDb = db
    const renewTimer = setInterval(() => {
      void renewServerCertIfDue({dataDir: o.dataDir, ca, db: liveDb, clock: o.clock, hostnames: config.hostnames, currentPem: currentCert})
        .then((r) => {
          if (!r) return
          currentCert = r.cert
          ;(app.server as unknown as HttpsServer).setSecureContext({key: r.key, cert: r.cert, ca: keys.caCert})
          o.logger.info('renewed HQ\'s server certificate')
        })
        .catch((err: unknown) => o.logger.error({err}, 'server certificate renewal failed'))
    }, 12 * 3_600_000)
    renewTimer.unref()
    // The CRL is re-signed every hour (valid a day), so brokers and peers never hold a stale one.
    const crlTimer = setInterval(() => {
      void crl.latest().catch((err: unknown) => o.logger.error({err}, 'CRL re-signing failed'))
    }, 3_600_000)
    crlTimer.unref()
    const addr = app.server.address() as AddressInfo
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
    const openDb = db
    let closing: Promise<void> | undefined
    return {
      url: `https://${host}:${addr.port}`,
      caFingerprint: config.ca_fingerprint,
      app,
      db: openDb,
      ledger,
      sockets,
      rollouts: rolloutDriver,
      alerts: alertEvaluator,
      webhooks: webhookDispatcher,
      registryScan,
      events,
      close() {
        closing ??= (async () => {
          clearInterval(renewTimer)
          clearInterval(crlTimer)
          await app.close()
          // Requests are done: store what is still batched, and let a pruning run in flight finish.
          await HeartbeatIngester.of(openDb).close()
          // After the ingester: its last batches' nodes go out with the final flush.
          await events.close()
          await heartbeatRetention.stop()
          await rolloutDriver.stop()
          await alertEvaluator.stop()
          await registryScan?.stop()
          await webhookDispatcher.stop()
          commands.close()
          await watcher.stop()
          await auditLoops.stop()
          await openDb.close()
          await lock.release()
        })()
        return closing
      },
    }
  } catch (err) {
    await db?.close().catch(() => {})
    await lock.release()
    throw err
  }
}
