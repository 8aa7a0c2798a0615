import {createHash, randomBytes} from 'node:crypto'

import type {AuditActor} from '../../shared/audit.js'
import type {Clock} from '../../shared/clock.js'
import {parseCsr} from '../../shared/csr.js'
import type {Db} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {identityUri, isRole, type Role} from '../../shared/pki.js'
import {zoneFromPath, ZONES_HINT} from '../../shared/zones.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import type {CertificateAuthority, IssuedCert} from '../ca/ca.js'
import {notifyChanged} from '../events/hub.js'
import {recordCertificate} from '../store/index.js'
import {revokeCertificates} from './revocation.js'

export type JoinMinimums = {cpu_cores: number; memory_bytes: number; disk_bytes: number}
export const DEFAULT_JOIN_MINIMUMS: JoinMinimums = {cpu_cores: 2, memory_bytes: 2 * 1024 ** 3, disk_bytes: 20 * 1024 ** 3}

export const TRACKS = ['devnet', 'testnet', 'mainnet'] as const
export type Track = (typeof TRACKS)[number]

export type HardwareReport = {machine_id: string; system_uuid?: string; hostname?: string; cpu_cores: number; memory_bytes: number; disk_bytes: number}

export function actorOf(p: Principal): AuditActor {
  return p.kind === 'user' ? {type: 'user', id: p.name, role: p.role} : {type: 'node', id: p.id}
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/**
 * Identity and access at HQ: users, operators, node admission and join, renewal, revocation. Each
 * action changes state and writes its audit entry in one transaction.
 */
export class IdentityService {
  constructor(
    private readonly db: Db,
    private readonly ca: CertificateAuthority,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    private readonly minimums: JoinMinimums = DEFAULT_JOIN_MINIMUMS,
  ) {}

  // ---- users ------------------------------------------------------------------------------

  async addUser(by: AuditActor, name: string, role: string, csrPem: string): Promise<{name: string; role: Role; cert: IssuedCert}> {
    if (!isRole(role)) throw new JilError('ROLE_UNKNOWN', `no role ${JSON.stringify(role)}`, {status: 400, hint: 'roles: admin, ops-lead, security-lead, ci-pipeline, viewer'})
    if (!/^[a-z][a-z0-9._-]{0,62}$/.test(name)) throw new JilError('USER_NAME_INVALID', `user name ${JSON.stringify(name)} is not valid`, {status: 400, hint: 'lower-case letters, digits, . _ -; starting with a letter'})
    const key = await this.csrKey(csrPem, name, identityUri({kind: 'user', name}))
    const cert = await this.ca.issueUserForKey(name, role, key)
    await this.db.transaction(async (tx) => {
      const existing = await tx.query<{revoked_at: Date | null}>('SELECT revoked_at FROM users WHERE name = $1 FOR UPDATE', [name])
      if (existing.rows[0]) {
        throw existing.rows[0].revoked_at
          ? new JilError('USER_REVOKED', `user ${name} was revoked; a revoked name is never reused`, {status: 409, hint: 'pick another name'})
          : new JilError('USER_EXISTS', `user ${name} already exists`, {status: 409, hint: `renew it (jil hq user renew ${name}) or revoke it first`})
      }
      await tx.query('INSERT INTO users (name, role, created_at) VALUES ($1, $2, $3)', [name, role, this.clock.now()])
      await recordCertificate(tx, {serial: cert.serial, kind: 'user', subject: name, fingerprint: cert.fingerprint, not_before: cert.notBefore, not_after: cert.notAfter})
      await this.ledger.append(tx, {actor: by, action: 'user.add', subject: name, details: {role, serial: cert.serial, not_after: cert.notAfter.toISOString()}})
    })
    return {name, role, cert}
  }

  async renewUser(p: Principal, name: string, csrPem: string): Promise<{name: string; role: Role; cert: IssuedCert}> {
    const key = await this.csrKey(csrPem, name, identityUri({kind: 'user', name}))
    // The user row is locked for the whole renewal: a revocation cannot slip in between the check and the record.
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{role: Role; revoked_at: Date | null}>('SELECT role, revoked_at FROM users WHERE name = $1 FOR UPDATE', [name])
      const user = rows[0]
      if (!user) throw new JilError('USER_UNKNOWN', `no user ${name}`, {status: 404, hint: 'see jil hq user list'})
      if (user.revoked_at) throw new JilError('USER_REVOKED', `user ${name} is revoked`, {status: 409, hint: 'a revoked user cannot be renewed; add a new user'})
      const cert = await this.ca.issueUserForKey(name, user.role, key)
      await recordCertificate(tx, {serial: cert.serial, kind: 'user', subject: name, fingerprint: cert.fingerprint, not_before: cert.notBefore, not_after: cert.notAfter})
      await this.ledger.append(tx, {actor: actorOf(p), action: 'user.renew', subject: name, details: {serial: cert.serial, not_after: cert.notAfter.toISOString()}})
      return {name, role: user.role, cert}
    })
  }

  async listUsers(): Promise<{name: string; role: string; created_at: string; revoked_at: string | null; cert_expires: string | null}[]> {
    const {rows} = await this.db.query<{name: string; role: string; created_at: Date; revoked_at: Date | null; cert_expires: Date | null}>(
      `SELECT u.name, u.role, u.created_at, u.revoked_at,
              (SELECT max(not_after) FROM certificates c WHERE c.kind = 'user' AND c.subject = u.name AND c.revoked_at IS NULL) AS cert_expires
         FROM users u ORDER BY u.name`,
    )
    return rows.map((r) => ({name: r.name, role: r.role, created_at: r.created_at.toISOString(), revoked_at: r.revoked_at?.toISOString() ?? null, cert_expires: r.cert_expires?.toISOString() ?? null}))
  }

  /** Revokes a user and every certificate they hold; returns the serials for the socket sweep. */
  async revokeUser(p: Principal, name: string, reason: string): Promise<{name: string; revoked_at: string; serials: string[]}> {
    const now = this.clock.now()
    const serials = await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{role: string; revoked_at: Date | null}>('SELECT role, revoked_at FROM users WHERE name = $1 FOR UPDATE', [name])
      const user = rows[0]
      if (!user) throw new JilError('USER_UNKNOWN', `no user ${name}`, {status: 404, hint: 'see jil hq user list'})
      if (user.revoked_at) throw new JilError('USER_REVOKED', `user ${name} is already revoked`, {status: 409})
      if (user.role === 'admin') {
        const admins = await tx.query<{n: number}>("SELECT count(*)::int AS n FROM users WHERE role = 'admin' AND revoked_at IS NULL")
        if ((admins.rows[0]?.n ?? 0) <= 1) throw new JilError('LAST_ADMIN', `${name} is the last admin`, {status: 409, hint: 'add another admin first (jil hq user add NAME --role admin)'})
      }
      await tx.query('UPDATE users SET revoked_at = $2 WHERE name = $1', [name, now])
      const serials = await revokeCertificates(tx, {kind: 'user', subject: name}, reason, now)
      await this.ledger.append(tx, {actor: actorOf(p), action: 'user.revoke', subject: name, details: {reason, serials}})
      return serials
    })
    return {name, revoked_at: now.toISOString(), serials}
  }

  // ---- operators --------------------------------------------------------------------------

  async setOperator(p: Principal, name: string, kyc: string, mode: 'add' | 'set'): Promise<{name: string; kyc: string}> {
    if (!['approved', 'pending', 'rejected'].includes(kyc)) throw new JilError('KYC_INVALID', `KYC status ${JSON.stringify(kyc)} is not approved, pending or rejected`, {status: 400})
    if (!/^[A-Za-z0-9][A-Za-z0-9 ._&-]{0,99}$/.test(name)) throw new JilError('OPERATOR_NAME_INVALID', `operator name ${JSON.stringify(name)} is not valid`, {status: 400, hint: 'letters, digits, space . _ & -'})
    const now = this.clock.now()
    await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{kyc: string}>('SELECT kyc FROM operators WHERE name = $1 FOR UPDATE', [name])
      if (mode === 'add' && rows[0]) throw new JilError('OPERATOR_EXISTS', `operator ${name} already exists`, {status: 409, hint: `change its KYC status with jil hq operator set ${JSON.stringify(name)} --kyc …`})
      if (mode === 'set' && !rows[0]) throw new JilError('OPERATOR_UNKNOWN', `no operator ${name}`, {status: 404, hint: 'register it with jil hq operator add'})
      if (mode === 'add') await tx.query('INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ($1, $2, $3, $3)', [name, kyc, now])
      else await tx.query('UPDATE operators SET kyc = $2, updated_at = $3 WHERE name = $1', [name, kyc, now])
      await this.ledger.append(tx, {actor: actorOf(p), action: mode === 'add' ? 'operator.add' : 'operator.set', subject: name, details: {kyc, ...(rows[0] ? {previous: rows[0].kyc} : {})}})
    })
    return {name, kyc}
  }

  async listOperators(): Promise<{name: string; kyc: string; nodes: number; updated_at: string}[]> {
    const {rows} = await this.db.query<{name: string; kyc: string; nodes: number; updated_at: Date}>(
      `SELECT o.name, o.kyc, o.updated_at, (SELECT count(*)::int FROM nodes n WHERE n.operator = o.name AND n.status <> 'revoked') AS nodes
         FROM operators o ORDER BY o.name`,
    )
    return rows.map((r) => ({...r, updated_at: r.updated_at.toISOString()}))
  }

  // ---- nodes ------------------------------------------------------------------------------

  /** The seed's POST /v1/fleet/nodes: records the node as pending and returns a one-time join token. */
  async admitNode(p: Principal, o: {node_id: string; zone: string; operator: string; track: Track; ttlMs: number}): Promise<{node_id: string; zone: string; operator: string; track: Track; token: string; expires_at: string}> {
    const zone = zoneFromPath(o.zone)
    const now = this.clock.now()
    const expires = new Date(now.getTime() + o.ttlMs)
    const token = 'jil_join_' + randomBytes(32).toString('base64url')
    await this.db.transaction(async (tx) => {
      if (!(await tx.query('SELECT 1 FROM zones WHERE code = $1', [zone])).rowCount) throw new JilError('ZONE_UNKNOWN', `${zone} is not one of the zones`, {status: 400, hint: ZONES_HINT})
      if (!(await tx.query('SELECT 1 FROM operators WHERE name = $1', [o.operator])).rowCount) throw new JilError('OPERATOR_UNKNOWN', `no operator ${o.operator}`, {status: 400, hint: 'register it with jil hq operator add'})
      const {rows} = await tx.query<{status: string}>('SELECT status FROM nodes WHERE id = $1 FOR UPDATE', [o.node_id])
      const status = rows[0]?.status
      if (status === 'revoked') throw new JilError('NODE_REVOKED', `node ${o.node_id} was revoked; its id can never join again`, {status: 409, hint: 'admit the machine under a new node id'})
      let readmit = false
      if (status === 'active') {
        // A node whose certificates have all expired (offline past its renewal) may be admitted again.
        const live = await tx.query("SELECT 1 FROM certificates WHERE kind = 'node' AND subject = $1 AND revoked_at IS NULL AND not_after > $2", [o.node_id, now])
        if (live.rowCount) throw new JilError('NODE_EXISTS', `node ${o.node_id} has joined and holds a valid certificate`, {status: 409, hint: 'it renews itself (jil node renew); to replace the machine, revoke it (the id is then retired)'})
        readmit = true
      }
      if (status === 'pending' || readmit) {
        if (readmit) await tx.query("UPDATE nodes SET status = 'pending' WHERE id = $1", [o.node_id])
        await tx.query('UPDATE nodes SET zone = $2, operator = $3, track = $4 WHERE id = $1', [o.node_id, zone, o.operator, o.track])
        await tx.query('DELETE FROM join_tokens WHERE node_id = $1 AND used_at IS NULL', [o.node_id]) // one live token per node
      } else {
        await tx.query("INSERT INTO nodes (id, zone, operator, track, status, created_at) VALUES ($1, $2, $3, $4, 'pending', $5)", [o.node_id, zone, o.operator, o.track, now])
      }
      await tx.query('INSERT INTO join_tokens (token_hash, node_id, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)', [tokenHash(token), o.node_id, actorOf(p).id, now, expires])
      await notifyChanged(tx, 'nodes', [o.node_id])
      await this.ledger.append(tx, {actor: actorOf(p), action: 'token.create', subject: o.node_id, details: {zone, operator: o.operator, track: o.track, expires_at: expires.toISOString(), ...(readmit ? {readmit: true} : {})}})
    })
    return {node_id: o.node_id, zone, operator: o.operator, track: o.track, token, expires_at: expires.toISOString()}
  }

  /** A node joins with its token: every check, the certificate, the node record and the audit entry in one transaction. */
  async joinNode(o: {token: string; csr: string; operator: string; hardware: HardwareReport}): Promise<{node_id: string; zone: string; track: Track; operator: string; cert: IssuedCert}> {
    const now = this.clock.now()
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{node_id: string; expires_at: Date; used_at: Date | null; zone: string; operator: string; track: Track; status: string; kyc: string}>(
        `SELECT t.node_id, t.expires_at, t.used_at, n.zone, n.operator, n.track, n.status, o.kyc
           FROM join_tokens t JOIN nodes n ON n.id = t.node_id JOIN operators o ON o.name = n.operator
          WHERE t.token_hash = $1 FOR UPDATE OF t, n`,
        [tokenHash(o.token)],
      )
      const t = rows[0]
      if (!t) throw new JilError('TOKEN_INVALID', 'the join token is not known to HQ', {status: 401, hint: 'ask an ops-lead for a token: jil hq token create'})
      if (t.status === 'revoked') throw new JilError('NODE_REVOKED', `node ${t.node_id} was revoked; its id can never join again`, {status: 403, hint: 'admit the machine under a new node id'})
      if (t.used_at) throw new JilError('TOKEN_USED', 'the join token was already used', {status: 401, hint: 'tokens are one-time: ask for a new one'})
      if (t.expires_at.getTime() <= now.getTime()) throw new JilError('TOKEN_EXPIRED', `the join token expired at ${t.expires_at.toISOString()}`, {status: 401, hint: 'ask an ops-lead for a new token: jil hq token create'})
      if (o.operator !== t.operator) throw new JilError('TOKEN_MISMATCH', `the token was issued for operator ${t.operator}, not ${o.operator}`, {status: 403, hint: 'join with the operator the token names'})
      if (t.kyc !== 'approved') throw new JilError('KYC_NOT_APPROVED', `operator ${t.operator} has KYC status ${t.kyc}`, {status: 403, hint: 'a security-lead or admin must approve the operator first'})
      const short = belowMinimum(o.hardware, this.minimums)
      if (short) throw new JilError('HARDWARE_BELOW_MINIMUM', short, {status: 403, hint: 'join from a machine that meets HQ\'s minimums'})
      const key = await this.csrKey(o.csr, t.node_id, identityUri({kind: 'node', id: t.node_id}), 'TOKEN_MISMATCH')
      const cert = await this.ca.issueNode(t.node_id, t.zone, key)
      await tx.query('UPDATE join_tokens SET used_at = $2 WHERE token_hash = $1', [tokenHash(o.token), now])
      await tx.query("UPDATE nodes SET status = 'active', joined_at = $2, hardware = $3 WHERE id = $1", [t.node_id, now, JSON.stringify(o.hardware)])
      await notifyChanged(tx, 'nodes', [t.node_id])
      await recordCertificate(tx, {serial: cert.serial, kind: 'node', subject: t.node_id, fingerprint: cert.fingerprint, not_before: cert.notBefore, not_after: cert.notAfter})
      await this.ledger.append(tx, {
        actor: {type: 'node', id: t.node_id},
        action: 'node.join',
        subject: t.node_id,
        details: {zone: t.zone, operator: t.operator, track: t.track, serial: cert.serial, machine_id: o.hardware.machine_id, cpu_cores: o.hardware.cpu_cores, memory_bytes: o.hardware.memory_bytes, disk_bytes: o.hardware.disk_bytes},
      })
      return {node_id: t.node_id, zone: t.zone, track: t.track, operator: t.operator, cert}
    })
  }

  async renewNode(p: Principal, csrPem: string): Promise<IssuedCert> {
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', 'only nodes renew node certificates', {status: 403})
    const key = await this.csrKey(csrPem, p.id, identityUri({kind: 'node', id: p.id}))
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{status: string; zone: string}>('SELECT status, zone FROM nodes WHERE id = $1 FOR UPDATE', [p.id])
      if (rows[0]?.status !== 'active') throw new JilError('CERT_REVOKED', `node ${p.id} is not active`, {status: 401, hint: 'a revoked node cannot renew'})
      const cert = await this.ca.issueNode(p.id, rows[0].zone, key)
      await recordCertificate(tx, {serial: cert.serial, kind: 'node', subject: p.id, fingerprint: cert.fingerprint, not_before: cert.notBefore, not_after: cert.notAfter})
      await notifyChanged(tx, 'nodes', [p.id]) // its cert expiry moved
      await this.ledger.append(tx, {actor: actorOf(p), action: 'node.renew', subject: p.id, details: {serial: cert.serial, previous_serial: p.serial, not_after: cert.notAfter.toISOString()}})
      return cert
    })
  }

  /** The seed's DELETE /v1/fleet/nodes/:id: permanent. Returns the serials for the socket sweep. */
  async revokeNode(p: Principal, nodeId: string, reason: string): Promise<{node_id: string; revoked_at: string; serials: string[]}> {
    const now = this.clock.now()
    const serials = await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{status: string}>('SELECT status FROM nodes WHERE id = $1 FOR UPDATE', [nodeId])
      if (!rows[0]) throw new JilError('NODE_UNKNOWN', `no node ${nodeId}`, {status: 404, hint: 'see jil fleet nodes'})
      if (rows[0].status === 'revoked') throw new JilError('NODE_REVOKED', `node ${nodeId} is already revoked`, {status: 409})
      await tx.query("UPDATE nodes SET status = 'revoked', revoked_at = $2, revoke_reason = $3 WHERE id = $1", [nodeId, now, reason])
      await notifyChanged(tx, 'nodes', [nodeId])
      await tx.query('DELETE FROM join_tokens WHERE node_id = $1 AND used_at IS NULL', [nodeId])
      const serials = await revokeCertificates(tx, {kind: 'node', subject: nodeId}, reason, now)
      await this.ledger.append(tx, {actor: actorOf(p), action: 'cert.revoke', subject: nodeId, details: {kind: 'node', reason, serials}})
      return serials
    })
    return {node_id: nodeId, revoked_at: now.toISOString(), serials}
  }

  /** The public key of a CSR whose subject and SAN name exactly the identity being certified. */
  private async csrKey(csrPem: string, cn: string, uri: string, mismatchCode = 'CSR_INVALID') {
    const csr = await parseCsr(csrPem)
    if (csr.commonName !== cn || (csr.sanUris.length > 0 && (csr.sanUris.length !== 1 || csr.sanUris[0] !== uri))) {
      throw new JilError(mismatchCode, `the CSR is for ${csr.commonName ?? '(no CN)'}, not ${cn}`, {status: 400, hint: `make the CSR with CN=${cn}`})
    }
    return csr.publicKey
  }
}

function belowMinimum(h: HardwareReport, m: JoinMinimums): string | undefined {
  const gib = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GiB`
  if (h.cpu_cores < m.cpu_cores) return `the machine has ${h.cpu_cores} CPU cores; HQ requires ${m.cpu_cores}`
  if (h.memory_bytes < m.memory_bytes) return `the machine has ${gib(h.memory_bytes)} of memory; HQ requires ${gib(m.memory_bytes)}`
  if (h.disk_bytes < m.disk_bytes) return `the machine has ${gib(h.disk_bytes)} of disk; HQ requires ${gib(m.disk_bytes)}`
  return undefined
}
