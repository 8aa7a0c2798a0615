import type {FastifyInstance, FastifyRequest} from 'fastify'

import {JilError} from '../shared/errors.js'
import type {Role} from '../shared/pki.js'
import type {Principal} from './auth.js'

/** What a user may do at HQ. Routes name the one permission they need. */
export const PERMISSIONS = [
  'fleet:read', // nodes, images, audit, alerts: everything read-only
  'audit:checkpoint', // ask HQ to sign an audit checkpoint now
  'users:manage', // add, renew (others'), revoke users
  'operators:manage', // register operators and their KYC status
  'nodes:admit', // create join tokens (POST /v1/fleet/nodes)
  'nodes:operate', // start, stop, pause, resume, upgrade, rollback, config push
  'nodes:revoke', // revoke a node (permanent)
  'images:sign', // sign an image onto devnet
  'images:approve', // approve an image for testnet/mainnet
  'images:promote', // promote an approved image
  'images:deprecate', // withdraw a manifest
  'stack:manage', // set and pin the stack of a track
  'alerts:manage', // ack, silence, webhooks
  'keys:manage', // rotate and retire the image-signing key
] as const
export type Permission = (typeof PERMISSIONS)[number]

const READ: Permission[] = ['fleet:read']

/**
 * The RBAC matrix (DESIGN.md §4), in one place: viewer reads; ci-pipeline signs to devnet;
 * ops-lead approves, admits and runs nodes; security-lead approves, revokes and decides operators'
 * KYC status (compliance); admin does everything.
 */
export const RBAC: Readonly<Record<Role, ReadonlySet<Permission>>> = {
  viewer: new Set(READ),
  'ci-pipeline': new Set([...READ, 'images:sign']),
  'ops-lead': new Set([...READ, 'audit:checkpoint', 'nodes:admit', 'nodes:operate', 'images:approve', 'images:promote', 'stack:manage', 'alerts:manage']),
  'security-lead': new Set([...READ, 'audit:checkpoint', 'operators:manage', 'nodes:revoke', 'images:approve', 'images:promote', 'images:deprecate', 'alerts:manage']),
  admin: new Set(PERMISSIONS),
}

export function can(role: string, permission: Permission): boolean {
  return (RBAC as Record<string, ReadonlySet<Permission> | undefined>)[role]?.has(permission) ?? false
}

/** Who may call a route: a user holding a permission, a node (node-facing routes), or any authenticated caller. */
export type Access = {permission: Permission} | {node: true} | {any: true}

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access
  }
}

/**
 * Every authenticated route declares its access in `config.access`; one hook decides, right after
 * authentication and before the body is even parsed. A route without a declaration is refused (fail
 * closed), so a forgotten declaration is a 403, not a hole.
 */
export function installRbac(app: FastifyInstance): void {
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const p = req.principal
    if (!p) return // anonymous routes (the auth hook already refused everything else)
    if (req.routeOptions.url === undefined) return // no such route: the 404 handler answers
    const access = req.routeOptions.config.access
    authorize(p, access)
  })
}

export function authorize(p: Principal, access: Access | undefined): void {
  if (!access) throw new JilError('FORBIDDEN', 'this route declares no access rule', {status: 403, hint: 'a bug in HQ: report it'})
  if ('any' in access) return
  if ('node' in access) {
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', 'only nodes may call this route', {status: 403, hint: 'use a node identity (jil node join)'})
    return
  }
  if (p.kind !== 'user') throw new JilError('FORBIDDEN', `nodes may not call this route (needs ${access.permission})`, {status: 403, hint: 'call it as a user'})
  if (!can(p.role, access.permission)) {
    throw new JilError('FORBIDDEN', `role ${p.role} lacks the permission ${access.permission}`, {
      status: 403,
      hint: `ask an admin; roles with ${access.permission}: ${rolesWith(access.permission).join(', ')}`,
      details: {permission: access.permission},
    })
  }
}

export function rolesWith(permission: Permission): Role[] {
  return (Object.keys(RBAC) as Role[]).filter((r) => RBAC[r].has(permission))
}
