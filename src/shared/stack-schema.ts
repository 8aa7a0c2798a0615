import {Type, type Static} from '@sinclair/typebox'

/**
 * The stack spec's wire schema (DESIGN.md §5): what `jil hq stack set` validates a file against and
 * HQ validates a request body against. Apart from stack.ts so the node's agents, which only read
 * documents HQ already validated and signed, never load TypeBox (cron starts them every minute).
 */

/** A service name: lower case, digits and dashes (it becomes part of a container name). */
export const SERVICE_NAME = '^[a-z][a-z0-9-]{0,62}$'
/** An image name as manifests carry it (`jil/settlement-api`), without registry host or tag. */
export const IMAGE_NAME = '^[a-z0-9]+(?:[._/-][a-z0-9]+)*$'

export const HealthCheckSchema = Type.Object(
  {
    /** Docker's form: ["CMD", "wget", "-q", "…"] or ["CMD-SHELL", "test -f /ready"]. */
    test: Type.Array(Type.String({maxLength: 4096}), {minItems: 2, maxItems: 64}),
    interval_s: Type.Optional(Type.Number({minimum: 1, maximum: 3600})),
    timeout_s: Type.Optional(Type.Number({minimum: 1, maximum: 3600})),
    retries: Type.Optional(Type.Integer({minimum: 1, maximum: 100})),
    start_period_s: Type.Optional(Type.Number({minimum: 0, maximum: 3600})),
  },
  {additionalProperties: false},
)

export const MountSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('bind'), Type.Literal('volume'), Type.Literal('tmpfs')]),
    /** Host path (bind) or volume name (volume); empty for tmpfs. */
    source: Type.String({maxLength: 4096}),
    target: Type.String({minLength: 1, maxLength: 4096, pattern: '^/'}),
    read_only: Type.Optional(Type.Boolean()),
  },
  {additionalProperties: false},
)

export const ServiceSpecSchema = Type.Object(
  {
    name: Type.String({pattern: SERVICE_NAME}),
    image: Type.String({pattern: IMAGE_NAME, maxLength: 255}),
    command: Type.Optional(Type.Array(Type.String({maxLength: 4096}), {maxItems: 256})),
    env: Type.Optional(Type.Record(Type.String({pattern: '^[A-Za-z_][A-Za-z0-9_]*$'}), Type.String({maxLength: 32768}))),
    /** `HOST:CONTAINER`, `IP:HOST:CONTAINER`, optionally `/tcp` or `/udp`. */
    ports: Type.Optional(Type.Array(Type.String({pattern: '^(?:[0-9.]+:)?\\d{1,5}:\\d{1,5}(?:/(?:tcp|udp))?$'}), {maxItems: 64})),
    mounts: Type.Optional(Type.Array(MountSchema, {maxItems: 64})),
    health: Type.Optional(HealthCheckSchema),
    /** A critical service that is unhealthy makes the node fail /healthz (the load balancer routes around it). */
    critical: Type.Boolean(),
    /** The user the process runs as (`1000`, `1000:1000`, `app`); absent = the image's (often root: the security agent flags it). */
    user: Type.Optional(Type.String({maxLength: 64})),
    /** Docker network mode: `bridge` (default), `host`, `none`, or a network name. */
    network: Type.Optional(Type.String({pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$'})),
    /** Seconds a container without a health check must stay running to count as started (update agent). */
    grace_s: Type.Optional(Type.Number({minimum: 0, maximum: 3600})),
    /** Seconds docker waits after SIGTERM before SIGKILL when stopping it. */
    stop_timeout_s: Type.Optional(Type.Integer({minimum: 0, maximum: 3600})),
  },
  {additionalProperties: false},
)
export type ServiceSpec = Static<typeof ServiceSpecSchema>

export const StackSpecSchema = Type.Object({services: Type.Array(ServiceSpecSchema, {minItems: 1, maxItems: 1000})}, {additionalProperties: false})
export type StackSpec = Static<typeof StackSpecSchema>

/** Checks what the schema cannot: unique service names. Returns the problem or undefined. */
export function stackSpecProblem(spec: StackSpec): string | undefined {
  const seen = new Set<string>()
  for (const s of spec.services) {
    if (seen.has(s.name)) return `service ${s.name} appears twice`
    seen.add(s.name)
  }
  return undefined
}

