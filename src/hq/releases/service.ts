import type {Clock} from '../../shared/clock.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {
  APPROVER_ROLES,
  approvalPayload,
  compareVersions,
  parseVersion,
  signManifest,
  TRACK_POLICY,
  verifyManifest,
  type ImageManifest,
  type Track,
} from '../../shared/manifest.js'
import {certInfo, normalizeSerial} from '../../shared/pki.js'
import {fileSigner, generateEd25519Key, type Signer} from '../../shared/signing.js'
import {endorse, type KeyEndorsement, type ServedKey} from '../../shared/signing-keys.js'
import {verifyUserSignature, type UserSignature} from '../../shared/user-signature.js'
import {canonicalJson} from '../../shared/canonical.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {actorOf} from '../identity/service.js'
import {parseImageRef, RegistryClient} from '../registry/oci.js'

export type ImageRow = {
  image: string
  repository: string
  version: string
  digest: string
  track: Track
  approvals: number
  approvers: string[]
  signed_by: string
  pushed_by: string
  created_at: string
  deprecated: {at: string; reason: string; by: string} | null
}

type ManifestRow = {body: ImageManifest; pushed_by: string; deprecated_at: Date | null; deprecated_by: string | null; deprecated_reason: string | null}

function withDeprecation(r: ManifestRow): ImageManifest {
  return r.deprecated_at ? {...r.body, deprecated: {at: r.deprecated_at.toISOString(), reason: r.deprecated_reason ?? '', by: r.deprecated_by ?? ''}} : r.body
}

/**
 * Signed releases at HQ: sign onto devnet, approve, promote devnet → testnet → mainnet, deprecate.
 * Each action and its audit entry in one transaction; every manifest HQ writes is verified with the
 * same library nodes use before it is stored.
 */
export class ReleaseService {
  constructor(
    private readonly db: Db,
    private signer: Signer,
    private signingPublicPem: string,
    private readonly caPem: string,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    private readonly registryFor: (registry: string) => Promise<RegistryClient> = RegistryClient.for,
  ) {}

  /** Records HQ's current signing key (at start); rotation adds more. */
  async registerKey(): Promise<void> {
    await this.db.query('INSERT INTO signing_keys (key_id, public_key, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING', [
      this.signer.keyId,
      this.signingPublicPem,
      this.clock.now(),
    ])
  }

  async keys(): Promise<ServedKey[]> {
    const {rows} = await this.db.query<{key_id: string; public_key: string; created_at: Date; retired_at: Date | null; endorsement: KeyEndorsement | null}>(
      'SELECT key_id, public_key, created_at, retired_at, endorsement FROM signing_keys ORDER BY created_at',
    )
    return rows.map((r) => ({
      key_id: r.key_id,
      public_key: r.public_key,
      created_at: r.created_at.toISOString(),
      ...(r.retired_at ? {retired_at: r.retired_at.toISOString()} : {}),
      endorsement: r.endorsement,
    }))
  }

  /**
   * `jil hq keys rotate`: a new signing key, endorsed by the current one, becomes current. Old
   * manifests stay verifiable until the old key is retired. `store` persists the key pair (data dir).
   */
  async rotateKey(p: Principal, store: (next: {privatePem: string; publicPem: string; keyId: string}, previousKeyId: string) => Promise<string>): Promise<ServedKey> {
    const next = await generateEd25519Key()
    const previousPem = await store(next, this.signer.keyId)
    const createdAt = this.clock.now().toISOString()
    const endorsement = endorse({keyId: this.signer.keyId, privatePem: previousPem}, {key_id: next.keyId, public_key: next.publicPem, created_at: createdAt})
    await this.db.transaction(async (tx) => {
      await tx.query('INSERT INTO signing_keys (key_id, public_key, created_at, endorsement) VALUES ($1, $2, $3, $4)', [next.keyId, next.publicPem, createdAt, JSON.stringify(endorsement)])
      await this.ledger.append(tx, {actor: actorOf(p), action: 'key.rotate', subject: next.keyId, details: {previous: this.signer.keyId, key_id: next.keyId}})
    })
    this.signer = await fileSigner(next.privatePem)
    this.signingPublicPem = next.publicPem
    return {key_id: next.keyId, public_key: next.publicPem, created_at: createdAt, endorsement}
  }

  /** `jil hq keys retire`: manifests the key signs after this time no longer verify; earlier ones still do. */
  async retireKey(p: Principal, keyId: string): Promise<{key_id: string; retired_at: string}> {
    if (keyId === this.signer.keyId) throw new JilError('KEY_CURRENT', `${keyId} is the current signing key`, {status: 409, hint: 'rotate first (jil hq keys rotate), then retire the old key'})
    const now = this.clock.now()
    return this.db.transaction(async (tx) => {
      const r = await tx.query('UPDATE signing_keys SET retired_at = $2 WHERE key_id = $1 AND retired_at IS NULL', [keyId, now])
      if (r.rowCount === 0) throw new JilError('KEY_UNKNOWN', `no active signing key ${keyId}`, {status: 404, hint: 'see jil hq keys list'})
      await this.ledger.append(tx, {actor: actorOf(p), action: 'key.retire', subject: keyId, details: {key_id: keyId}})
      return {key_id: keyId, retired_at: now.toISOString()}
    })
  }

  get currentKeyId(): string {
    return this.signer.keyId
  }

  /** `jil hq sign`: resolves a tag to the registry's digest, signs the manifest onto devnet. */
  async sign(p: Principal, o: {ref: string; version: string; commit: string}): Promise<ImageManifest> {
    parseVersion(o.version)
    if (!/^[0-9a-f]{7,64}$/.test(o.commit)) throw new JilError('COMMIT_INVALID', `--commit ${JSON.stringify(o.commit)} is not a git SHA`, {status: 400, hint: 'pass the commit the image was built from (7 to 64 hex digits)'})
    const ref = parseImageRef(o.ref)
    const registry = await this.registryFor(ref.registry)
    // A digest is checked to exist; a tag is resolved by the registry itself, never trusted from the client.
    const digest = await registry.resolve(ref.repository, ref.digest ?? ref.tag ?? 'latest')
    if (ref.digest && digest !== ref.digest) throw new JilError('DIGEST_MISMATCH', `the registry reports ${digest} for ${ref.digest}`, {status: 409})
    const manifest = await signManifest(
      {image: ref.repository, repository: `${ref.registry}/${ref.repository}`, digest, version: o.version, track: 'devnet', commit: o.commit, created_at: this.clock.now().toISOString()},
      this.signer,
    )
    await this.db.transaction(async (tx) => {
      const exists = await tx.query('SELECT 1 FROM manifests WHERE digest = $1 AND track = $2 FOR UPDATE', [digest, 'devnet'])
      if (exists.rowCount) throw new JilError('MANIFEST_EXISTS', `${ref.repository}@${digest} is already signed onto devnet`, {status: 409, hint: 'each digest is signed once; promote it with jil hq promote'})
      await this.insert(tx, manifest, actorName(p))
      await this.ledger.append(tx, {
        actor: actorOf(p),
        action: 'image.push',
        subject: `${ref.repository}@${digest}`,
        details: {image: ref.repository, digest, version: o.version, track: 'devnet', commit: o.commit, key_id: this.signer.keyId, ...(ref.tag ? {tag: ref.tag} : {})},
      })
    })
    return manifest
  }

  /** `jil hq approve`: a user signature made by the approver's own key, kept for the target track. */
  async approve(p: Principal, digest: string, track: 'testnet' | 'mainnet', approval: UserSignature): Promise<{digest: string; track: Track; approvers: string[]}> {
    if (p.kind !== 'user') throw new JilError('FORBIDDEN', 'only users approve', {status: 403})
    const source = await this.manifest(this.db, digest, 'devnet')
    if (!source) throw new JilError('MANIFEST_UNKNOWN', `no signed manifest for ${digest}`, {status: 404, hint: 'sign it first: jil hq sign'})
    if (source.deprecated_at) throw new JilError('DEPRECATED', `${digest} was deprecated: ${source.deprecated_reason ?? ''}`, {status: 409})
    const revoked = await this.revokedSerials()
    const verified = verifyUserSignature(approval, {caPem: this.caPem, now: this.clock.now(), purpose: 'approve', roles: APPROVER_ROLES, isRevoked: (s) => revoked.has(normalizeSerial(s))})
    if (verified.user !== p.name) throw new JilError('APPROVAL_NOT_YOURS', `the approval is signed by ${verified.user}, not by you (${p.name})`, {status: 403, hint: 'each approver submits their own signature'})
    if (canonicalJson(approval.payload) !== canonicalJson(approvalPayload(source.body, track))) {
      throw new JilError('APPROVAL_MISMATCH', 'the approval is not for this image, digest and track', {status: 400, hint: 'sign {purpose: approve, image, digest, track} for this release'})
    }
    if (verified.user === source.pushed_by) throw new JilError('APPROVER_IS_PUSHER', `${verified.user} pushed this image and cannot approve it`, {status: 403, hint: 'another ops-lead or security-lead must approve'})
    return this.db.transaction(async (tx) => {
      const ins = await tx.query(
        'INSERT INTO approvals (digest, track, user_name, role, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING',
        [digest, track, verified.user, verified.role, JSON.stringify(approval), this.clock.now()],
      )
      if (ins.rowCount === 0) throw new JilError('ALREADY_APPROVED', `${verified.user} already approved ${digest} for ${track}`, {status: 409, hint: 'one user counts once'})
      await this.ledger.append(tx, {actor: actorOf(p), action: 'image.approve', subject: `${source.body.image}@${digest}`, details: {digest, track, version: source.body.version, role: verified.role}})
      const {rows} = await tx.query<{user_name: string}>('SELECT user_name FROM approvals WHERE digest = $1 AND track = $2 ORDER BY user_name', [digest, track])
      return {digest, track, approvers: rows.map((r) => r.user_name)}
    })
  }

  /** `jil hq promote`: the target track's manifest over the same digest, once its approvals suffice. */
  async promote(p: Principal, digest: string, to: 'testnet' | 'mainnet', allowDowngrade: boolean): Promise<ImageManifest> {
    if (allowDowngrade && !(p.kind === 'user' && p.role === 'admin')) {
      throw new JilError('FORBIDDEN', '--allow-downgrade is for admins', {status: 403, hint: 'ask an admin', details: {permission: 'admin'}})
    }
    const from: Track = to === 'testnet' ? 'devnet' : 'testnet'
    const keys = await this.keys()
    const revoked = await this.revokedSerials()
    return this.db.transaction(async (tx) => {
      const source = await this.manifest(tx, digest, from, true)
      if (!source) {
        throw new JilError('NOT_ON_TRACK', `${digest} is not on ${from}`, {status: 409, hint: to === 'mainnet' ? 'promote it to testnet first' : 'sign it first: jil hq sign'})
      }
      if (source.deprecated_at) throw new JilError('DEPRECATED', `${digest} was deprecated`, {status: 409})
      if (await this.manifest(tx, digest, to)) throw new JilError('ALREADY_PROMOTED', `${digest} is already on ${to}`, {status: 409})
      const {rows} = await tx.query<{signature: UserSignature}>('SELECT signature FROM approvals WHERE digest = $1 AND track = $2 ORDER BY user_name', [digest, to])
      const {rows: current} = await tx.query<{version: string}>('SELECT version FROM manifests WHERE image = $1 AND track = $2 AND deprecated_at IS NULL', [source.body.image, to])
      const highest = current.map((r) => r.version).sort(compareVersions).at(-1)
      const downgrade = highest !== undefined && compareVersions(source.body.version, highest) < 0
      if (downgrade && !allowDowngrade) {
        throw new JilError('VERSION_ROLLBACK', `${to} runs ${source.body.image} ${highest}; ${source.body.version} is lower`, {status: 409, hint: 'versions on a track only go up; an admin may pass --allow-downgrade'})
      }
      const {key_id: _k, signature: _s, approvals: _a, deprecated: _d, ...unsigned} = source.body
      const signed = await signManifest({...unsigned, track: to, created_at: this.clock.now().toISOString()}, this.signer)
      const manifest: ImageManifest = {...signed, approvals: rows.map((r) => r.signature)}
      const policy = TRACK_POLICY[to]
      const check = verifyManifest(manifest, {keys, caPem: this.caPem, isRevoked: (s) => revoked.has(normalizeSerial(s))}, {
        track: to,
        digest,
        minApprovals: policy.minApprovals,
        ...(policy.requireRoles ? {requireRoles: policy.requireRoles} : {}),
        pusher: source.pushed_by,
      })
      if (!check.ok) throw new JilError(check.code, check.message, {status: 409, hint: to === 'mainnet' ? 'mainnet needs 2 approvals from distinct users, one a security-lead: jil hq approve' : 'testnet needs 1 approval: jil hq approve'})
      await this.insert(tx, manifest, source.pushed_by)
      await this.ledger.append(tx, {
        actor: actorOf(p),
        action: 'image.promote',
        subject: `${manifest.image}@${digest}`,
        details: {image: manifest.image, digest, version: manifest.version, from, to, approvals: check.approvers.length, approvers: check.approvers, ...(downgrade ? {downgrade_from: highest} : {})},
      })
      return manifest
    })
  }

  /** `jil hq deprecate`: withdraws the digest's manifests on every track. */
  async deprecate(p: Principal, digest: string, reason: string): Promise<{digest: string; tracks: Track[]; reason: string}> {
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<{track: Track; image: string}>(
        'UPDATE manifests SET deprecated_at = $2, deprecated_by = $3, deprecated_reason = $4 WHERE digest = $1 AND deprecated_at IS NULL RETURNING track, image',
        [digest, this.clock.now(), actorName(p), reason],
      )
      if (rows.length === 0) throw new JilError('MANIFEST_UNKNOWN', `no live manifest for ${digest}`, {status: 404, hint: 'see jil hq images'})
      await this.ledger.append(tx, {actor: actorOf(p), action: 'image.deprecate', subject: `${rows[0]!.image}@${digest}`, details: {digest, reason, tracks: rows.map((r) => r.track)}})
      return {digest, tracks: rows.map((r) => r.track), reason}
    })
  }

  async list(track?: Track): Promise<ImageRow[]> {
    const {rows} = await this.db.query<ManifestRow & {digest: string; track: Track}>(
      `SELECT m.digest, m.track, m.body, m.pushed_by, m.deprecated_at, m.deprecated_by, m.deprecated_reason FROM manifests m
        ${track ? 'WHERE m.track = $1' : ''} ORDER BY m.image, m.created_at`,
      track ? [track] : [],
    )
    return rows.map((r) => {
      const m = withDeprecation(r)
      return {
        image: m.image,
        repository: m.repository,
        version: m.version,
        digest: m.digest,
        track: m.track,
        approvals: m.approvals.length,
        approvers: m.approvals.map((a) => approverOf(a)),
        signed_by: m.key_id,
        pushed_by: r.pushed_by,
        created_at: m.created_at,
        deprecated: m.deprecated ?? null,
      }
    })
  }

  /** Node-facing: every manifest of a digest (deprecations included) and the keys to check them with. */
  async manifestsFor(digest: string): Promise<{manifests: ImageManifest[]; keys: ServedKey[]}> {
    const {rows} = await this.db.query<ManifestRow>('SELECT body, pushed_by, deprecated_at, deprecated_by, deprecated_reason FROM manifests WHERE digest = $1 ORDER BY created_at', [digest])
    return {manifests: rows.map(withDeprecation), keys: await this.keys()}
  }

  /** Every digest in the registry with no live signed manifest (the seed's "Image Unsigned"). */
  async unsigned(registry: string): Promise<{repository: string; tag: string; digest: string}[]> {
    const inventory = await (await this.registryFor(registry)).inventory()
    const {rows} = await this.db.query<{digest: string}>('SELECT DISTINCT digest FROM manifests WHERE deprecated_at IS NULL')
    const signed = new Set(rows.map((r) => r.digest))
    return inventory.filter((i) => !signed.has(i.digest)).map((i) => ({...i, repository: `${registry}/${i.repository}`}))
  }

  private async manifest(q: Queryable, digest: string, track: Track, lock = false): Promise<ManifestRow | undefined> {
    const {rows} = await q.query<ManifestRow>(
      `SELECT body, pushed_by, deprecated_at, deprecated_by, deprecated_reason FROM manifests WHERE digest = $1 AND track = $2 ${lock ? 'FOR UPDATE' : ''}`,
      [digest, track],
    )
    return rows[0]
  }

  private async insert(tx: Queryable, m: ImageManifest, pushedBy: string): Promise<void> {
    await tx.query('INSERT INTO manifests (digest, track, image, version, pushed_by, created_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      m.digest,
      m.track,
      m.image,
      m.version,
      pushedBy,
      m.created_at,
      JSON.stringify(m),
    ])
  }

  private async revokedSerials(): Promise<Set<string>> {
    const {rows} = await this.db.query<{serial: string}>("SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND kind = 'user'")
    return new Set(rows.map((r) => r.serial))
  }
}

function approverOf(a: UserSignature): string {
  try {
    const p = certInfo(a.cert).principal
    return p?.kind === 'user' ? p.name : '?'
  } catch {
    return '?'
  }
}

function actorName(p: Principal): string {
  return p.kind === 'user' ? p.name : p.id
}
