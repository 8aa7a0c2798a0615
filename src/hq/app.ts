import type {Server as HttpsServer, ServerOptions} from 'node:https'

import Fastify, {LogController, type FastifyInstance} from 'fastify'
import type {Logger} from 'pino'

import {Health, WhoAmI} from '../shared/api.js'
import type {Clock} from '../shared/clock.js'
import type {Db} from '../shared/db/types.js'
import type {AlertMetrics} from './alerts/metrics.js'
import {alertRoutes} from './alerts/routes.js'
import type {AlertService} from './alerts/service.js'
import {webhookRoutes} from './alerts/webhook-routes.js'
import type {WebhookService} from './alerts/webhooks.js'
import type {AuditLedger} from './audit/ledger.js'
import {auditRoutes} from './audit/routes.js'
import type {FleetEventHub} from './events/hub.js'
import {eventRoutes, type EventRouteOptions} from './events/routes.js'
import {installAuth, principalOfRequest, type Principal} from './auth.js'
import type {RunModeActions} from './fleet/actions.js'
import {commandRoutes} from './fleet/command-routes.js'
import type {CommandService} from './fleet/commands.js'
import type {ConfigService} from './fleet/config.js'
import {configRoutes} from './fleet/config-routes.js'
import {rolloutRoutes} from './fleet/rollout-routes.js'
import type {RolloutService} from './fleet/rollouts.js'
import {fleetRoutes} from './fleet/routes.js'
import type {FleetService} from './fleet/service.js'
import {identityRoutes, type IdentityDeps} from './identity/routes.js'
import {releaseRoutes, type KeyStore} from './releases/routes.js'
import type {ReleaseService} from './releases/service.js'
import type {RegistryTokenIssuer} from './registry/token.js'
import {installMetrics} from './metrics.js'
import {installProblemHandlers} from './problem.js'
import {installRbac} from './rbac.js'
import {stackRoutes} from './stack/routes.js'
import type {StackService} from './stack/service.js'

export type HqAppDeps = {
  db: Db
  clock: Clock
  logger: Logger
  version: string
  caCertPem: string
  ledger: AuditLedger
  /** Signed releases and the registry whose images they cover (absent in tests of the bare app). */
  releases?: {service: ReleaseService; registry: string | undefined; tokens?: RegistryTokenIssuer; keyStore?: KeyStore}
  /** What nodes run and what they report: stacks, desired states, heartbeats, the node list. */
  runtime?: {stacks: StackService; fleet: FleetService}
  /** Commands to nodes (long-poll, results, broadcast) and the run-mode actions that send them. */
  commands?: {service: CommandService; actions: RunModeActions}
  /** Config push: versioned config documents per zone or node, carried in desired states. */
  config?: ConfigService
  /** Rollouts, per-node upgrades and rollbacks. */
  rollouts?: RolloutService
  /** Alerts, acks and silences, webhooks; the alert engine's metrics join HQ's registry. */
  alerts?: {service: AlertService; metrics?: AlertMetrics; webhooks?: WebhookService}
  /** The live fleet stream (GET /v1/events) for `jil top`. */
  events?: {hub: FleetEventHub} & EventRouteOptions
  /** Identity and access: absent only in tests that exercise the bare app. */
  identity?: Omit<IdentityDeps, 'caCertPem'>
  /** TLS material for the one listener; requestCert without rejectUnauthorized (DESIGN.md §4). */
  tls: Pick<ServerOptions, 'key' | 'cert' | 'ca'>
}

/** Keep-alive above the 60-second heartbeat interval, so each node's heartbeat reuses its connection. */
export const KEEP_ALIVE_MS = 72_000

/** Builds HQ's HTTPS app: mutual-TLS gate, problem+json errors, metrics and the v1 routes. */
export async function buildHqApp(deps: HqAppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    https: {...deps.tls, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2'},
    loggerInstance: deps.logger,
    keepAliveTimeout: KEEP_ALIVE_MS,
    requestTimeout: 120_000,
    bodyLimit: 1024 * 1024,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    // One log line per request, written by our onResponse hook (with the principal), not fastify's two.
    logController: new LogController({disableRequestLogging: true}),
    // Query strings arrive as text: coerce them to the schema's types; never drop unknown fields silently.
    ajv: {customOptions: {removeAdditional: false, allErrors: false, coerceTypes: 'array'}},
  }) as unknown as FastifyInstance

  installProblemHandlers(app)
  installAuth(app, deps.db, deps.clock)
  installRbac(app)
  const metrics = installMetrics(app)
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({method: req.method, route: req.routeOptions.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime), principal: describe(req.principal)}, 'request')
  })

  app.get('/v1/ca', async (_req, reply) => reply.type('application/x-pem-file').send(deps.caCertPem))

  app.get('/v1/health', {config: {access: {any: true}}, schema: {response: {200: Health}}}, async () => {
    await deps.db.query('SELECT 1')
    return {status: 'ok' as const, version: deps.version, time: deps.clock.now().toISOString(), database: deps.db.kind}
  })

  app.get('/v1/whoami', {config: {access: {any: true}}, schema: {response: {200: WhoAmI}}}, async (req) => {
    const p = principalOfRequest(req)
    return p.kind === 'user'
      ? {kind: 'user' as const, name: p.name, role: p.role, serial: p.serial, not_after: p.notAfter.toISOString()}
      : {kind: 'node' as const, name: p.id, ...(p.zone ? {zone: p.zone} : {}), serial: p.serial, not_after: p.notAfter.toISOString()}
  })

  auditRoutes(app, deps.db, deps.ledger)
  if (deps.releases) releaseRoutes(app, deps.releases.service, deps.releases.registry, deps.releases.tokens, deps.releases.keyStore)
  if (deps.runtime) {
    stackRoutes(app, deps.runtime.stacks)
    fleetRoutes(app, deps.runtime.fleet)
  }
  if (deps.commands) commandRoutes(app, deps.commands.service, deps.commands.actions)
  if (deps.config) configRoutes(app, deps.config)
  if (deps.rollouts) rolloutRoutes(app, deps.rollouts)
  if (deps.alerts) {
    alertRoutes(app, deps.alerts.service)
    if (deps.alerts.webhooks) webhookRoutes(app, deps.alerts.webhooks)
    deps.alerts.metrics?.registerOn(metrics)
  }
  if (deps.events) eventRoutes(app, deps.events.hub, deps.clock, metrics, deps.events)
  if (deps.identity) {
    deps.identity.sockets.attach(app.server as unknown as HttpsServer)
    identityRoutes(app, {...deps.identity, caCertPem: deps.caCertPem})
  }

  app.get('/metrics', {config: {access: {any: true}}}, async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()))

  return app
}

function describe(p: Principal | undefined): string | undefined {
  if (!p) return undefined
  return p.kind === 'user' ? `user:${p.name}` : `node:${p.id}`
}
