/**
 * The wire contract of HQ API v1 (DESIGN.md §6): TypeBox schemas that HQ validates against and
 * the one HQ client types its results with. TypeBox is JSON Schema, so fastify's validator and
 * serializer use these directly.
 */
import {Type, type Static} from '@sinclair/typebox'

import {AGENT_NAMES} from './agents.js'
import {ALERT_RULES, ALERT_SEVERITIES, ALERT_STATES} from './alerts.js'
import type {ConfigDoc, ConfigDocRef, ConfigScope} from './config-docs.js'
import {NODE_STATUSES} from './fleet.js'
import {NODE_ID_PATTERN} from './ids.js'
import {ZONE_ANY_FORM_PATTERN} from './zones.js'
import {DELIVERY_EVENTS, DELIVERY_STATES, WEBHOOK_FORMATS, WEBHOOK_SECRET_MAX} from './webhooks.js'

export const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  code: Type.String(),
  detail: Type.Optional(Type.String()),
  hint: Type.Optional(Type.String()),
  field: Type.Optional(Type.String()),
  /** The permission a 403 names. */
  permission: Type.Optional(Type.String()),
})
export type Problem = Static<typeof Problem>

export const WhoAmI = Type.Object({
  kind: Type.Union([Type.Literal('user'), Type.Literal('node')]),
  name: Type.String({description: 'user name or node id'}),
  role: Type.Optional(Type.String()),
  zone: Type.Optional(Type.String()),
  serial: Type.String(),
  not_after: Type.String({format: 'date-time'}),
})
export type WhoAmI = Static<typeof WhoAmI>

export const Health = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  time: Type.String({format: 'date-time'}),
  database: Type.Union([Type.Literal('pg'), Type.Literal('pglite')]),
})
export type Health = Static<typeof Health>

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'

const Hex32 = Type.String({pattern: '^[0-9a-f]{64}$'})

export const AuditActorSchema = Type.Union([
  Type.Object({type: Type.Literal('user'), id: Type.String(), role: Type.String()}),
  Type.Object({type: Type.Literal('node'), id: Type.String()}),
  Type.Object({type: Type.Literal('hq'), id: Type.String()}),
])

export const AuditEntrySchema = Type.Object({
  seq: Type.Integer({minimum: 1}),
  time: Type.String(),
  actor: AuditActorSchema,
  action: Type.String(),
  subject: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
  prev_hash: Hex32,
  hash: Hex32,
})

export const AuditPage = Type.Object({
  entries: Type.Array(AuditEntrySchema),
  /** The cursor of the next page (same filters), or null at the end. */
  next: Type.Union([Type.Object({after: Type.Integer()}), Type.Object({before: Type.Integer()}), Type.Null()]),
})
export type AuditPage = Static<typeof AuditPage>

export const CheckpointSchema = Type.Object({
  origin: Type.String(),
  tree_size: Type.Integer({minimum: 1}),
  root_hash: Hex32,
  time: Type.String(),
  key_id: Type.String(),
  signature: Type.String(),
})

export const InclusionProof = Type.Object({
  seq: Type.Integer(),
  tree_size: Type.Integer(),
  leaf_index: Type.Integer(),
  entry: AuditEntrySchema,
  proof: Type.Array(Hex32),
})
export type InclusionProof = Static<typeof InclusionProof>

export const ConsistencyProof = Type.Object({from: Type.Integer(), to: Type.Integer(), proof: Type.Array(Hex32)})
export type ConsistencyProof = Static<typeof ConsistencyProof>

// ---------------------------------------------------------------------------------------------
// Node → HQ: heartbeats and agent reports (the daemon issue). HQ keeps the latest of each.

/** A finding of an agent (security, maintenance, health): structured, so HQ and `jil top` can act on it. */
export const FindingSchema = Type.Object({
  /** Stable per check and subject, e.g. `container-root:api`, `ssh-permit-root-login`. */
  id: Type.String({maxLength: 200}),
  severity: Type.Union([Type.Literal('info'), Type.Literal('warning'), Type.Literal('critical')]),
  title: Type.String({maxLength: 500}),
  evidence: Type.String({maxLength: 4000}),
  remediation: Type.String({maxLength: 1000}),
})
export type Finding = Static<typeof FindingSchema>

export type {AgentName} from './agents.js'
const AgentNameSchema = Type.Union(AGENT_NAMES.map((n) => Type.Literal(n)))

/**
 * One run of an agent. `ok` says the agent did its job (findings are data, not failures); `error`
 * is set when it could not. `details` is the agent's own structured result.
 */
export const AgentReportSchema = Type.Object({
  agent: AgentNameSchema,
  node_id: Type.String({maxLength: 64}),
  started_at: Type.String({maxLength: 40}),
  finished_at: Type.String({maxLength: 40}),
  ok: Type.Boolean(),
  summary: Type.String({maxLength: 1000}),
  findings: Type.Array(FindingSchema, {maxItems: 1000}),
  error: Type.Optional(Type.Object({code: Type.String({maxLength: 100}), message: Type.String({maxLength: 1000})})),
  details: Type.Record(Type.String(), Type.Unknown()),
})
export type AgentReport = Static<typeof AgentReportSchema>

/** The last run of an agent, as the heartbeat carries it. */
export const AgentSummarySchema = Type.Object({
  at: Type.String(),
  ok: Type.Boolean(),
  summary: Type.String({maxLength: 1000}),
  critical: Type.Integer({minimum: 0}),
  warning: Type.Integer({minimum: 0}),
})
export type AgentSummary = Static<typeof AgentSummarySchema>

export const ContainerHealthSchema = Type.Union([Type.Literal('healthy'), Type.Literal('unhealthy'), Type.Literal('starting'), Type.Literal('none')])

export const HeartbeatServiceSchema = Type.Object({
  name: Type.String({maxLength: 64}),
  critical: Type.Boolean(),
  /** created, running, paused, restarting, removing, exited, dead, or missing (no container). */
  state: Type.String({maxLength: 20}),
  health: ContainerHealthSchema,
  digest: Type.Union([Type.String({maxLength: 100}), Type.Null()]),
  version: Type.Union([Type.String({maxLength: 64}), Type.Null()]),
})
export type HeartbeatService = Static<typeof HeartbeatServiceSchema>

/** A node's event sync as its heartbeat reports it (the sync issue). */
export const HeartbeatSyncSchema = Type.Object({
  lag_s: Type.Number(),
  caught_up: Type.Boolean(),
  /** Outbox rows not yet published (grows while the bus is away). */
  outbox_backlog: Type.Optional(Type.Integer({minimum: 0})),
  /** Events missing from sources' sequences. */
  gaps: Type.Optional(Type.Integer({minimum: 0})),
})
export type HeartbeatSync = Static<typeof HeartbeatSyncSchema>

/** What the health agent posts every 60 s (the seed's heartbeat: system, consensus, security metrics). */
export const HeartbeatSchema = Type.Object({
  node_id: Type.String({maxLength: 64}),
  time: Type.String(),
  agent_version: Type.String({maxLength: 64}),
  run_mode: Type.Union([Type.Literal('running'), Type.Literal('paused'), Type.Literal('stopped')]),
  /** The sequence of the desired state the node last applied (0: none yet). */
  desired_sequence: Type.Integer({minimum: 0}),
  /** The config version the node last wrote to its config dir (0: none; absent from older nodes). */
  config_version: Type.Optional(Type.Integer({minimum: 0})),
  containers: Type.Object({
    total: Type.Integer({minimum: 0}),
    running: Type.Integer({minimum: 0}),
    healthy: Type.Integer({minimum: 0}),
    unhealthy: Type.Integer({minimum: 0}),
    exited: Type.Integer({minimum: 0}),
    restarting: Type.Integer({minimum: 0}),
    other: Type.Integer({minimum: 0}),
  }),
  services: Type.Array(HeartbeatServiceSchema, {maxItems: 2000}),
  system: Type.Object({
    cpu_percent: Type.Number(),
    load1: Type.Number(),
    memory_used_bytes: Type.Number(),
    memory_total_bytes: Type.Number(),
    disk_used_bytes: Type.Number(),
    disk_total_bytes: Type.Number(),
    disk_percent: Type.Number(),
  }),
  cert: Type.Object({serial: Type.String({maxLength: 64}), not_after: Type.String()}),
  agents: Type.Partial(Type.Object({health: AgentSummarySchema, maintenance: AgentSummarySchema, security: AgentSummarySchema, update: AgentSummarySchema})),
  /** CometBFT's /status when a consensus RPC URL is configured. */
  consensus: Type.Optional(Type.Object({latest_height: Type.Integer(), catching_up: Type.Boolean(), error: Type.Optional(Type.String({maxLength: 500}))})),
  /** Event sync (the sync issue). */
  sync: Type.Optional(HeartbeatSyncSchema),
})
export type Heartbeat = Static<typeof HeartbeatSchema>

/** A node as `GET /v1/fleet/nodes` lists it; status is derived, never stored loosely. */
export {NODE_STATUSES, type NodeStatus} from './fleet.js'

export const FleetNodeSchema = Type.Object({
  id: Type.String(),
  zone: Type.String(),
  operator: Type.String(),
  track: Type.String(),
  status: Type.Union(NODE_STATUSES.map((s) => Type.Literal(s))),
  run_mode: Type.String(),
  joined_at: Type.Union([Type.String(), Type.Null()]),
  last_heartbeat_at: Type.Union([Type.String(), Type.Null()]),
  /** Seconds since the last heartbeat (null: never). */
  heartbeat_age_s: Type.Union([Type.Number(), Type.Null()]),
  /** Versions running per service, from the last heartbeat. */
  versions: Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()])),
  cert_not_after: Type.Union([Type.String(), Type.Null()]),
  system: Type.Union([HeartbeatSchema.properties.system, Type.Null()]),
  /** Event sync from the last heartbeat (null: the node reports none; absent from an older HQ). */
  sync: Type.Optional(Type.Union([HeartbeatSyncSchema, Type.Null()])),
})
export type FleetNode = Static<typeof FleetNodeSchema>

// ---------------------------------------------------------------------------------------------
// Commands to nodes (issue 7): HQ stores them, the node's daemon long-polls them, runs each once by
// id and answers with a result.

export const NODE_COMMANDS = ['refresh', 'cycle', 'pause', 'resume', 'stop', 'start', 'reboot'] as const
export type NodeCommandName = (typeof NODE_COMMANDS)[number]
export const COMMAND_STATUSES = ['pending', 'delivered', 'succeeded', 'failed', 'expired'] as const
export type CommandStatus = (typeof COMMAND_STATUSES)[number]

/** What a node reports for a command it ran. */
export const CommandResultSchema = Type.Object(
  {
    ok: Type.Boolean(),
    summary: Type.String({maxLength: 1000}),
    error: Type.Optional(Type.Object({code: Type.String({maxLength: 100}), message: Type.String({maxLength: 1000})})),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  {additionalProperties: false},
)
export type CommandResult = Static<typeof CommandResultSchema>

/** A command as a node receives it. */
export const NodeCommandSchema = Type.Object({
  id: Type.String(),
  command: Type.Union(NODE_COMMANDS.map((c) => Type.Literal(c))),
  created_at: Type.String(),
  expires_at: Type.String(),
  /** How many times HQ has handed it out (more than 1: a redelivery, which the node must not run again). */
  deliveries: Type.Integer({minimum: 1}),
})
export type NodeCommand = Static<typeof NodeCommandSchema>

/** A command as users see it. */
export const FleetCommandSchema = Type.Object({
  id: Type.String(),
  node_id: Type.String(),
  command: Type.Union(NODE_COMMANDS.map((c) => Type.Literal(c))),
  status: Type.Union(COMMAND_STATUSES.map((s) => Type.Literal(s))),
  created_by: Type.String(),
  created_at: Type.String(),
  expires_at: Type.String(),
  delivered_at: Type.Union([Type.String(), Type.Null()]),
  deliveries: Type.Integer({minimum: 0}),
  finished_at: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([CommandResultSchema, Type.Null()]),
})
export type FleetCommand = Static<typeof FleetCommandSchema>

/** Who a command goes to: every active node, the active nodes of a zone, or one node. */
export const CommandTargetSchema = Type.Union([
  Type.Object({all: Type.Literal(true)}, {additionalProperties: false}),
  Type.Object({zone: Type.String({pattern: ZONE_ANY_FORM_PATTERN.source})}, {additionalProperties: false}),
  Type.Object({node: Type.String({pattern: NODE_ID_PATTERN.source})}, {additionalProperties: false}),
])
export type CommandTarget = Static<typeof CommandTargetSchema>

export const RUN_MODE_ACTIONS = ['stop', 'start', 'pause', 'resume'] as const
export type RunModeAction = (typeof RUN_MODE_ACTIONS)[number]

/** The answer to `POST /v1/fleet/nodes/:id/{stop,start,pause,resume}`. */
export type RunModeChange = {
  node_id: string
  action: RunModeAction
  run_mode: 'running' | 'paused' | 'stopped'
  previous_run_mode: 'running' | 'paused' | 'stopped'
  /** False when the node already had that run mode (the refresh is sent all the same). */
  changed: boolean
  /** The refresh command that makes the node act now. */
  command_id: string
  message: string
}

/** What a node should run (HQ: its run mode and the sequence of the desired state last issued) and what it says it applied (its heartbeat). */
export type DesiredVsApplied = {
  desired: {run_mode: string; config_version: number; sequence: number | null}
  /** config_version: what the node says it wrote (0 from a node too old to say). */
  applied: {run_mode: string; sequence: number; config_version: number; at: string} | null
  /** Applied matches desired (run mode, sequence and config version); null when the node never sent a heartbeat. */
  in_sync: boolean | null
}

/**
 * A service as the node's last heartbeat reports it (container state, health, digest, version), with
 * what HQ knows of its digest on the node's track.
 */
export type NodeServiceView = HeartbeatService & {
  /** A live (not deprecated) signed manifest for this digest exists on the node's track. */
  signed: boolean
  /** The digest's manifest on the node's track was deprecated (withdrawn); signed is then false. */
  deprecated: boolean
  /** The image name of that manifest (null: no manifest for the digest on the track, or no digest). */
  image: string | null
}

/** `GET /v1/fleet/nodes/:id`: the node as listed, the latest report of each agent, desired vs applied. */
export type FleetNodeDetail = FleetNode & {
  reports: Partial<Record<AgentReport['agent'], AgentReport & {received_at: string}>>
  state: DesiredVsApplied
  /** The node's effective config documents (desired) and the config version it says it applied. */
  config: NodeConfigView
  /** From the last heartbeat (absent: no heartbeat yet, or an older HQ): its services, sorted by name. */
  services?: NodeServiceView[]
  /** From the last heartbeat: container counts. */
  containers?: Heartbeat['containers']
  /** From the last heartbeat: each agent's last run as the node summarised it. */
  agents?: Heartbeat['agents']
  /** From the last heartbeat: CometBFT's status, when the node watches one. */
  consensus?: Heartbeat['consensus']
  /** From the last heartbeat: the agent version and the certificate the node says it holds. */
  agent_version?: string
  heartbeat_cert?: Heartbeat['cert']
}

/** The answer to `DELETE /v1/fleet/nodes/:id` (`jil hq revoke`). */
export type NodeRevocation = {node_id: string; revoked_at: string; serials: string[]}

// ---------------------------------------------------------------------------------------------
// Rollouts (issue 7): testnet and mainnet nodes move by rollout, one pin at a time, health-gated.

export const ROLLOUT_ACTIONS = ['pause', 'resume', 'abort'] as const
export type RolloutAction = (typeof ROLLOUT_ACTIONS)[number]

/** `POST /v1/fleet/nodes/:id/upgrade` and `POST /v1/fleet/jurisdictions/:zone/upgrade`. */
export const UpgradeRequestSchema = Type.Object(
  {
    /** IMAGE@sha256:…: the image's name (or repository) and the registry digest. */
    image: Type.String({pattern: '^[^@\\s]+@sha256:[0-9a-f]{64}$', maxLength: 400}),
    /** Only nodes of this track (a zone may hold testnet and mainnet nodes). */
    track: Type.Optional(Type.Union([Type.Literal('testnet'), Type.Literal('mainnet')])),
    max_parallel: Type.Optional(Type.Integer({minimum: 1, maximum: 1000})),
    min_healthy_s: Type.Optional(Type.Integer({minimum: 0, maximum: 86_400})),
    health_timeout_s: Type.Optional(Type.Integer({minimum: 1, maximum: 86_400})),
    auto_revert: Type.Optional(Type.Boolean()),
    canary: Type.Optional(Type.Integer({minimum: 0, maximum: 10_000})),
    /** Plan only: which nodes would move, from what, and the rollbacks auto-revert needs signed. */
    dry_run: Type.Optional(Type.Boolean()),
    /** With auto-revert: the caller's signed rollback for each payload the plan lists. */
    revert_signatures: Type.Optional(Type.Array(Type.Unknown(), {maxItems: 1000})),
  },
  {additionalProperties: false},
)
export type UpgradeRequest = Static<typeof UpgradeRequestSchema>

/** `POST /v1/fleet/nodes/:id/rollback`. */
export const RollbackRequestSchema = Type.Object(
  {
    /** Only this service (default: every service with a previous version). */
    service: Type.Optional(Type.String({minLength: 1, maxLength: 64})),
    dry_run: Type.Optional(Type.Boolean()),
    signatures: Type.Optional(Type.Array(Type.Unknown(), {maxItems: 1000})),
  },
  {additionalProperties: false},
)
export type RollbackRequest = Static<typeof RollbackRequestSchema>

export type VersionRef = {version: string; digest: string}

export type RolloutNodeView = {
  node_id: string
  position: number
  state: string
  services: {service: string; from: VersionRef | null}[]
  started_at: string | null
  healthy_since: string | null
  finished_at: string | null
  error: string | null
}

export type RolloutView = {
  id: string
  target: {zone?: string; node?: string; track?: string}
  image: string
  repository: string
  digest: string
  version: string
  max_parallel: number
  min_healthy_s: number
  health_timeout_s: number
  auto_revert: boolean
  canary: number
  state: string
  reason: string | null
  created_by: string
  created_at: string
  updated_at: string
  finished_at: string | null
  /** Nodes per state, e.g. {pending: 2, upgrading: 1, done: 3}. */
  counts: Record<string, number>
  nodes: RolloutNodeView[]
}

/** What a rollout would do (dry run), and the rollbacks its auto-revert needs signed by the caller. */
export type RolloutPlan = {
  image: string
  digest: string
  version: string
  nodes: {node_id: string; track: string; services: {service: string; from: VersionRef | null}[]}[]
  /** Nodes of the target left out, and why (devnet follows its newest manifest; another track). */
  skipped: {node_id: string; reason: string}[]
  revert_payloads: Record<string, unknown>[]
}

/** What a per-node rollback would do or did. */
export type RollbackPlan = {
  node_id: string
  track: string
  services: {service: string; from: VersionRef; to: VersionRef}[]
  payloads: Record<string, unknown>[]
  applied: boolean
  command_id: string | null
}

// ---------------------------------------------------------------------------------------------
// Alerts (issue 8): what the evaluator found, acks and silences. Rule, state and severity names
// live in alerts.ts (no TypeBox there, for the CLI's flag options).

const literalsOf = <T extends string>(xs: readonly T[]) => Type.Union(xs.map((x) => Type.Literal(x)))
const NullableString = Type.Union([Type.String(), Type.Null()])

export const AlertSchema = Type.Object({
  id: Type.String(),
  fingerprint: Type.String(),
  rule: literalsOf(ALERT_RULES),
  subject: Type.String(),
  node_id: NullableString,
  severity: literalsOf(ALERT_SEVERITIES),
  state: literalsOf(ALERT_STATES),
  summary: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
  silenced: Type.Boolean(),
  first_seen: Type.String(),
  last_seen: Type.String(),
  resolved_at: NullableString,
  acked_by: NullableString,
  acked_at: NullableString,
})

export const SilenceSchema = Type.Object({
  id: Type.String(),
  rule: literalsOf(ALERT_RULES),
  node_id: NullableString,
  reason: Type.String(),
  created_by: Type.String(),
  created_at: Type.String(),
  expires_at: Type.String(),
  active: Type.Boolean(),
})

/** The rule is checked by HQ (RULE_UNKNOWN names the rules), the duration too (for_s, in seconds). */
export const SilenceRequestSchema = Type.Object(
  {
    rule: Type.String({minLength: 1, maxLength: 64}),
    node_id: Type.Optional(Type.String({pattern: NODE_ID_PATTERN.source})),
    for_s: Type.Integer({minimum: 1}),
    reason: Type.String({minLength: 1, maxLength: 1000}),
  },
  {additionalProperties: false},
)

// ---------------------------------------------------------------------------------------------
// Config push (issue 7): versioned config documents per zone or per node, carried in the signed
// desired state (ConfigDoc, the name rule and the hash live in config-docs.ts, free of TypeBox).

/**
 * `POST /v1/fleet/jurisdictions/:zone/config` and `POST /v1/fleet/nodes/:id/config`. The name is
 * checked by HQ (CONFIG_NAME_INVALID says why); content is any JSON value up to 256 KiB canonical.
 */
export const ConfigPushRequestSchema = Type.Object(
  {
    name: Type.String({minLength: 1, maxLength: 200}),
    content: Type.Unknown(),
  },
  {additionalProperties: false},
)
export type ConfigPushRequest = {name: string; content: unknown}

/** A node a push reached: its new config version, and the refresh sent to it (none while it is pending). */
export type ConfigPushNode = {node_id: string; config_version: number; command_id: string | null}

/** The answer to a push. `changed: false`: the content equals the newest version, nothing was stored or sent. */
export type ConfigPushResult = {
  scope: ConfigScope
  /** CH/FINMA or the node id. */
  target: string
  name: string
  version: number
  seq: number
  sha256: string
  /** Length of the content's canonical JSON. */
  bytes: number
  changed: boolean
  created_by: string
  created_at: string
  /** Nodes whose effective config changed (their config version rose). */
  nodes: ConfigPushNode[]
  /** Zone pushes: nodes of the zone that keep their own document of this name (a node push shadows the zone's). */
  shadowed: string[]
  message: string
}

/** `GET /v1/fleet/config?zone=Z|node=ID`: a zone's current documents, or a node's effective ones. */
export type ConfigListing = {
  scope: ConfigScope
  target: string
  /** A node's config version (what its desired state carries); for a zone, the highest seq of its documents. */
  config_version: number
  docs: (ConfigDoc & {created_by: string; created_at: string})[]
}

/** A node's config in `GET /v1/fleet/nodes/:id`. */
export type NodeConfigView = {
  desired_version: number
  /** From the node's last heartbeat (null: no heartbeat yet). */
  applied_version: number | null
  desired: ConfigDocRef[]
}

// ---------------------------------------------------------------------------------------------
// Alert webhooks (issue 8, item 3): names and patterns live in webhooks.ts (no TypeBox there).

export const WebhookSchema = Type.Object({
  id: Type.String(),
  url: Type.String(),
  format: literalsOf(WEBHOOK_FORMATS),
  secret_fingerprint: Type.String(),
  routing_key_fingerprint: NullableString,
  created_by: Type.String(),
  created_at: Type.String(),
})

/** URL scheme, secret length and the routing key's presence are checked by HQ (with codes that say why). */
export const WebhookAddRequestSchema = Type.Object(
  {
    url: Type.String({minLength: 1, maxLength: 2048}),
    secret: Type.String({maxLength: WEBHOOK_SECRET_MAX}),
    format: Type.Optional(literalsOf(WEBHOOK_FORMATS)),
    routing_key: Type.Optional(Type.String({minLength: 1, maxLength: 128})),
  },
  {additionalProperties: false},
)

export const DeliverySchema = Type.Object({
  id: Type.String(),
  webhook_id: Type.String(),
  event: literalsOf(DELIVERY_EVENTS),
  alert_id: NullableString,
  fingerprint: NullableString,
  state: literalsOf(DELIVERY_STATES),
  attempts: Type.Integer(),
  next_attempt_at: NullableString,
  last_status: Type.Union([Type.Integer(), Type.Null()]),
  last_error: NullableString,
  created_at: Type.String(),
  finished_at: NullableString,
  attempt_log: Type.Array(Type.Object({at: Type.String(), status: Type.Union([Type.Integer(), Type.Null()]), error: NullableString})),
})
