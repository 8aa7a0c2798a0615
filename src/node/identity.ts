import {createPrivateKey, X509Certificate} from 'node:crypto'
import {readFile, rename, rm} from 'node:fs/promises'

import type {Clock} from '../shared/clock.js'
import {JilError, systemCode, usageError} from '../shared/errors.js'
import {exists, fileError, readSecret, readText, writeFileAtomic, writeSecret} from '../shared/files.js'
import {HqClient, type ClientIdentity} from '../shared/hq-client.js'
import {certFingerprint, certInfo, renewalDue, renewalTime, type CertInfo} from '../shared/pki.js'
import {fetchPinnedCa} from './ca-pin.js'
import {
  ensureStateDir,
  nodePath,
  parseFingerprint,
  parseHqUrl,
  parseNodeId,
  parseOperator,
  parseRegion,
  parseSeeds,
  parseZone,
  readNodeEnv,
  withStateLock,
  writeNodeEnv,
  type NodeEnv,
} from './config.js'
import type {HardwareReport} from './hardware.js'

// x509 (csr.ts) and systeminformation (hardware.ts) load only when a key, CSR or report is made:
// `jil node status` needs neither.
const csrModule = () => import('./csr.js')

// ---------------------------------------------------------------------------------------------
// The node side of the join/renew wire contract. (These mirror HQ's route schemas; when they land
// in src/shared/api.ts, import them from there.)

export type SigningKey = {key_id: string; public_key: string}

export type JoinRequest = {token: string; csr: string; operator: string; hardware: HardwareReport}

export type JoinResponse = {
  node_id: string
  zone: string
  track: string
  operator: string
  cert: string
  ca: string
  ca_fingerprint: string
  signing_keys: SigningKey[]
  not_after: string
}

export type RenewResponse = {cert: string; not_after: string}

/** identity.json: what HQ said at join. Its presence means the node has joined. */
export type NodeIdentityFile = {
  node_id: string
  zone: string
  track: string
  operator: string
  hq_url: string
  ca_fingerprint: string
  joined_at: string
}

/** How the node opens its HQ client (the daemon may pass its own). */
export type ConnectHq = (url: string, identity: ClientIdentity) => Promise<HqClient>

const connectHq: ConnectHq = (url, identity) => HqClient.connect(url, identity)

// ---------------------------------------------------------------------------------------------
// init

export type InitNodeOptions = {
  stateDir: string
  nodeId: string
  region: string
  jurisdiction: string
  hqUrl?: string | undefined
  redpandaSeeds?: string | undefined
  operator?: string | undefined
  /** Replace an existing identity: new key, node.env rewritten, join artifacts removed. */
  force?: boolean
}

export type NodeInitResult = {
  state_dir: string
  node_id: string
  region: string
  jurisdiction: string
  hq_url: string | null
  redpanda_seeds: string | null
  operator: string | null
  env_file: string
  key_file: string
  /** created: a new identity; unchanged: the same config was already there (init is idempotent); replaced: --force. */
  action: 'created' | 'unchanged' | 'replaced'
}

/**
 * Writes node.env and a new P-256 key (0600). Running it again with the same values changes
 * nothing (install-cron.sh calls it on every run); different values need `force`, which also
 * drops the certificate of a previous join: that key is gone, so the node must join again.
 */
export async function initNode(o: InitNodeOptions): Promise<NodeInitResult> {
  const env: NodeEnv = {
    JIL_NODE_ID: parseNodeId(o.nodeId),
    JIL_REGION: parseRegion(o.region),
    JIL_JURISDICTION: parseZone(o.jurisdiction),
    ...(o.redpandaSeeds ? {REDPANDA_SEEDS: parseSeeds(o.redpandaSeeds)} : {}),
    ...(o.hqUrl ? {JIL_HQ_URL: parseHqUrl(o.hqUrl)} : {}),
    ...(o.operator ? {JIL_OPERATOR: parseOperator(o.operator)} : {}),
  }
  const {stateDir} = o
  await ensureStateDir(stateDir)
  const action = await withStateLock(stateDir, 'jil node init', async () => {
    const present = await Promise.all((['env', 'key', 'cert', 'identity'] as const).map((f) => exists(nodePath(stateDir, f))))
    if (!present.some(Boolean)) {
      await createIdentity(stateDir, env)
      return 'created' as const
    }
    if (!o.force) {
      const old = await readNodeEnv(stateDir).catch(() => undefined)
      const differs = old ? envDiff(old, env) : ['node.env']
      if (differs.length === 0 && (await exists(nodePath(stateDir, 'key')))) return 'unchanged' as const
      throw new JilError('NODE_EXISTS', `${stateDir} already holds a node identity${old ? ` (${old.JIL_NODE_ID})` : ''} that differs in ${differs.join(', ')}`, {
        hint: 'pass --force to replace it with a new key (a joined node must then join again with a new token), or use another --state-dir',
        details: {differs},
      })
    }
    // Forget the old identity: "joined" goes first, so a crash midway leaves a node that is not joined.
    for (const f of ['identity', 'cert', 'signingKeys', 'ca', 'key', 'env'] as const) await rm(nodePath(stateDir, f), {force: true})
    await rm(nextPath(stateDir, 'key'), {force: true})
    await rm(nextPath(stateDir, 'cert'), {force: true})
    await createIdentity(stateDir, env)
    return 'replaced' as const
  })
  return {
    state_dir: stateDir,
    node_id: env.JIL_NODE_ID,
    region: env.JIL_REGION,
    jurisdiction: env.JIL_JURISDICTION,
    hq_url: env.JIL_HQ_URL ?? null,
    redpanda_seeds: env.REDPANDA_SEEDS ?? null,
    operator: env.JIL_OPERATOR ?? null,
    env_file: nodePath(stateDir, 'env'),
    key_file: nodePath(stateDir, 'key'),
    action,
  }
}

async function createIdentity(stateDir: string, env: NodeEnv): Promise<void> {
  const {generateNodeKey} = await csrModule()
  const {keyPem} = await generateNodeKey()
  await writeSecret(nodePath(stateDir, 'key'), keyPem)
  // node.env last: a node with a config always has its key.
  await writeNodeEnv(stateDir, env)
}

function envDiff(a: NodeEnv, b: NodeEnv): string[] {
  const keys = ['JIL_NODE_ID', 'JIL_REGION', 'JIL_JURISDICTION', 'REDPANDA_SEEDS', 'JIL_HQ_URL', 'JIL_OPERATOR'] as const
  return keys.filter((k) => (a[k] ?? '') !== (b[k] ?? ''))
}

// ---------------------------------------------------------------------------------------------
// join

export type JoinNodeOptions = {
  stateDir: string
  token: string
  /** `sha256:HEX` of HQ's CA, given out of band. */
  caFingerprint: string
  /** Default: JIL_HQ_URL of node.env. */
  hqUrl?: string | undefined
  /** Default: JIL_OPERATOR of node.env. */
  operator?: string | undefined
  clock: Clock
  /** The report to send instead of measuring this machine (tests of HQ's minimums). */
  hardware?: HardwareReport
  progress?: (line: string) => void
}

export type NodeJoinResult = {
  state_dir: string
  node_id: string
  zone: string
  track: string
  operator: string
  hq_url: string
  ca_fingerprint: string
  serial: string
  not_after: string
  signing_key_ids: string[]
  hardware: HardwareReport
  /** The node had joined before; its certificate and pinned keys were replaced. */
  rejoined: boolean
  warnings: string[]
}

/**
 * Joins HQ with a one-time token: pins HQ's CA by fingerprint before sending anything, then sends a
 * CSR for the node key, the hardware report and the operator over a connection that verifies HQ
 * against that CA, checks what HQ answers, and stores the certificate, the CA and the image-signing
 * keys. Nothing is written unless HQ issued a certificate that verifies.
 */
export async function joinNode(o: JoinNodeOptions): Promise<NodeJoinResult> {
  const progress = o.progress ?? (() => {})
  const {stateDir} = o
  const env = await readNodeEnv(stateDir)
  const nodeId = parseNodeId(env.JIL_NODE_ID)
  const hqRaw = o.hqUrl ?? env.JIL_HQ_URL
  if (!hqRaw) throw usageError('HQ_URL_MISSING', 'no HQ URL given', 'pass --hq https://HOST:PORT (or set JIL_HQ_URL)')
  const hqUrl = parseHqUrl(hqRaw)
  const operatorRaw = o.operator ?? env.JIL_OPERATOR
  if (!operatorRaw) throw usageError('OPERATOR_MISSING', 'no operator given', 'pass --operator ORG (or set it with jil node init --operator ORG)')
  const operator = parseOperator(operatorRaw)
  const fingerprint = parseFingerprint(o.caFingerprint)
  const token = o.token.trim()
  if (token === '') throw usageError('TOKEN_MISSING', 'the join token is empty', 'pass --token T (or set JIL_JOIN_TOKEN), from jil hq token create')

  return withStateLock(stateDir, 'jil node join', async () => {
    const {importNodeKey, createNodeCsr} = await csrModule()
    const keyPem = await readNodeKey(stateDir)
    const keys = await importNodeKey(keyPem)
    // Measure and build everything before the token is spent, so a local failure costs no token.
    const hardware = o.hardware ?? (await (await import('./hardware.js')).hardwareReport({stateDir}))
    const csr = await createNodeCsr(nodeId, keys)

    progress(`Fetching HQ's CA from ${hqUrl}`)
    const caPem = await fetchPinnedCa(hqUrl, fingerprint)
    progress(`HQ's CA matches ${fingerprint}; joining as ${nodeId}`)

    const body: JoinRequest = {token, csr, operator, hardware}
    const client = await connectHq(hqUrl, {ca: caPem})
    let res: JoinResponse
    try {
      res = await client.request<JoinResponse>('POST', '/v1/node/join', body)
    } catch (err) {
      throw joinRefusal(err, {nodeId, zone: env.JIL_JURISDICTION, operator, hqUrl})
    } finally {
      await client.close()
    }

    const warnings: string[] = []
    const issued = await checkJoinResponse(res, {nodeId, caPem, keyPem})
    if (fingerprintOf(res.ca) !== fingerprint || res.ca_fingerprint !== fingerprint) {
      warnings.push(`HQ sent a CA other than the pinned ${fingerprint} in its answer; the pinned CA is kept`)
    }
    if (res.zone !== env.JIL_JURISDICTION) {
      warnings.push(`HQ admitted this node in zone ${res.zone}, but node.env says ${env.JIL_JURISDICTION}; fix node.env with jil node init --force only if HQ is wrong`)
    }

    const rejoined = await exists(nodePath(stateDir, 'identity'))
    const identity: NodeIdentityFile = {
      node_id: nodeId,
      zone: res.zone,
      track: res.track,
      operator: res.operator,
      hq_url: hqUrl,
      ca_fingerprint: fingerprint,
      joined_at: o.clock.now().toISOString(),
    }
    await writeFileAtomic(nodePath(stateDir, 'ca'), caPem, 0o644)
    await writeFileAtomic(nodePath(stateDir, 'cert'), issued.pem, 0o644)
    await writeFileAtomic(nodePath(stateDir, 'signingKeys'), JSON.stringify(res.signing_keys, null, 2) + '\n', 0o644)
    // identity.json last: it is what makes the node "joined".
    await writeFileAtomic(nodePath(stateDir, 'identity'), JSON.stringify(identity, null, 2) + '\n', 0o644)

    return {
      state_dir: stateDir,
      node_id: nodeId,
      zone: res.zone,
      track: res.track,
      operator: res.operator,
      hq_url: hqUrl,
      ca_fingerprint: fingerprint,
      serial: issued.info.serial,
      not_after: issued.info.notAfter.toISOString(),
      signing_key_ids: res.signing_keys.map((k) => k.key_id),
      hardware,
      rejoined,
      warnings,
    }
  })
}

/** HQ's refusals keep HQ's code and hint; where HQ gives no hint, the node says what to do. */
function joinRefusal(err: unknown, c: {nodeId: string; zone: string; operator: string; hqUrl: string}): unknown {
  if (!(err instanceof JilError)) return err
  const newToken = `ask an ops-lead for a new token: jil hq token create --node-id ${c.nodeId} --jurisdiction ${c.zone} --operator "${c.operator}"`
  const hints: Record<string, string> = {
    TOKEN_INVALID: `check --token (JIL_JOIN_TOKEN), or ${newToken}`,
    TOKEN_EXPIRED: newToken,
    TOKEN_USED: newToken,
    TOKEN_MISMATCH: `the token was made for another node id, zone or operator than ${c.nodeId} in ${c.zone}; ${newToken}`,
    KYC_NOT_APPROVED: `operator ${c.operator} is not KYC-approved at HQ; an admin sets it: jil hq operator set "${c.operator}" --kyc approved`,
    OPERATOR_UNKNOWN: `HQ has no operator ${c.operator}: check --operator, or register it: jil hq operator add "${c.operator}" --kyc approved`,
    HARDWARE_BELOW_MINIMUM: 'this machine is below the hardware minimums HQ enforces; run the node on bigger hardware',
    NODE_REVOKED: `${c.nodeId} was revoked and can never join again; admit this machine under a new node id`,
    CSR_INVALID: 'HQ refused the certificate request; recreate the node key with jil node init --force and join again',
    ZONE_UNKNOWN: `HQ has no zone ${c.zone}; check --jurisdiction of jil node init`,
  }
  if (err.code === 'HQ_UNTRUSTED') {
    // HQ's CA is pinned, so what fails here is HQ's server certificate: most often a host name it does not name.
    return new JilError(err.code, err.message, {hint: 'HQ\'s certificate must name the host in --hq: use a host name HQ was initialised with (jil hq init --hostname)', cause: err})
  }
  const hint = err.hint ?? hints[err.code]
  if (hint === err.hint) return err
  return new JilError(err.code, err.message, {hint, status: err.status, exit: err.exit, ...(err.details ? {details: err.details} : {}), cause: err})
}

function fingerprintOf(pem: string): string | undefined {
  try {
    return certFingerprint(pem)
  } catch {
    return undefined
  }
}

type Issued = {pem: string; info: CertInfo}

/** Refuses an answer the node cannot use: a cert not from the pinned CA, not for its key or not for its id. */
function checkIssuedCert(pem: unknown, c: {nodeId: string; caPem: string; keyPem: string}): Issued {
  const bad = (why: string) =>
    new JilError('HQ_ANSWER_INVALID', `HQ issued a certificate the node cannot use: ${why}`, {hint: 'report this to HQ\'s operators; nothing was stored'})
  if (typeof pem !== 'string') throw bad('no certificate in the answer')
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pem)
  } catch {
    throw bad('it cannot be parsed')
  }
  const ca = new X509Certificate(c.caPem)
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw bad('it is not signed by the pinned CA')
  if (!cert.checkPrivateKey(createPrivateKey(c.keyPem))) throw bad('it is not for this node\'s key')
  const info = certInfo(pem)
  if (info.principal?.kind !== 'node' || info.principal.id !== c.nodeId) throw bad(`it is not for node ${c.nodeId}`)
  return {pem: pem.endsWith('\n') ? pem : pem + '\n', info}
}

async function checkJoinResponse(res: JoinResponse, c: {nodeId: string; caPem: string; keyPem: string}): Promise<Issued> {
  const {keyIdOf, parseEd25519PublicPem} = await import('../shared/signing.js')
  const bad = (why: string) => new JilError('HQ_ANSWER_INVALID', `HQ's answer to the join is malformed: ${why}`, {hint: 'check that --hq points to a jil HQ of this version'})
  for (const k of ['node_id', 'zone', 'track', 'operator', 'ca', 'ca_fingerprint', 'not_after'] as const) {
    if (typeof res?.[k] !== 'string') throw bad(`${k} is missing`)
  }
  if (!Array.isArray(res.signing_keys)) throw bad('signing_keys is missing')
  for (const k of res.signing_keys as unknown[]) {
    const key = k as Partial<SigningKey>
    if (typeof key?.key_id !== 'string' || typeof key.public_key !== 'string') throw bad('a signing key lacks key_id or public_key')
    let raw: Uint8Array
    try {
      raw = parseEd25519PublicPem(key.public_key)
    } catch {
      throw bad(`signing key ${key.key_id} is not an Ed25519 public key`)
    }
    if (keyIdOf(raw) !== key.key_id) throw bad(`signing key ${key.key_id} does not have that key id`)
  }
  return checkIssuedCert(res.cert, c)
}

// ---------------------------------------------------------------------------------------------
// the joined identity

/** A joined node's identity as stored: what the daemon and the commands load. */
export type NodeIdentity = {
  stateDir: string
  identity: NodeIdentityFile
  certPem: string
  keyPem: string
  caPem: string
  cert: CertInfo
}

/** Loads a joined node's identity, or says which step is missing (init, join). */
export async function loadNodeIdentity(stateDir: string): Promise<NodeIdentity> {
  const idPath = nodePath(stateDir, 'identity')
  let text: string
  try {
    text = await readFile(idPath, 'utf8')
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw fileError(idPath, 'node identity', err)
    const env = await readNodeEnv(stateDir) // NODE_NOT_INITIALIZED when there is not even a config
    throw new JilError('NODE_NOT_JOINED', `node ${env.JIL_NODE_ID} (${stateDir}) has not joined HQ`, {
      hint: 'run jil node join --hq URL --token T --ca-fingerprint sha256:HEX',
    })
  }
  let identity: NodeIdentityFile
  try {
    identity = JSON.parse(text) as NodeIdentityFile
  } catch {
    identity = {} as NodeIdentityFile
  }
  const fields = ['node_id', 'zone', 'track', 'operator', 'hq_url', 'ca_fingerprint', 'joined_at'] as const
  if (!fields.every((f) => typeof identity[f] === 'string')) {
    throw new JilError('NODE_IDENTITY_INVALID', `${idPath} is damaged`, {hint: 'join again with a new token (jil node join)'})
  }
  const [certPem, keyPem, caPem] = await Promise.all([
    readText(nodePath(stateDir, 'cert'), 'node certificate'),
    readNodeKey(stateDir),
    readText(nodePath(stateDir, 'ca'), 'HQ CA certificate'),
  ])
  return {stateDir, identity, certPem, keyPem, caPem, cert: certInfo(certPem)}
}

async function readNodeKey(stateDir: string): Promise<string> {
  try {
    return await readSecret(nodePath(stateDir, 'key'), 'node key')
  } catch (err) {
    if (err instanceof JilError && err.code === 'FILE_MISSING') {
      throw new JilError('NODE_NOT_INITIALIZED', `no node key in ${stateDir}`, {hint: 'run jil node init (with --force if node.env exists)', cause: err})
    }
    throw err
  }
}

// ---------------------------------------------------------------------------------------------
// renewal

/** When a certificate is due for renewal: at 2/3 of its lifetime (DESIGN.md §4, like step-ca). */
export {renewalDue, renewalTime}

export type RenewNodeOptions = {
  stateDir: string
  clock: Clock
  /** Renew only when renewalDue (the daemon's periodic call); otherwise always. */
  ifDue?: boolean
  connect?: ConnectHq
  progress?: (line: string) => void
}

export type NodeRenewResult = {
  state_dir: string
  node_id: string
  renewed: boolean
  serial: string
  /** The serial renewed away from (null when nothing was renewed). */
  previous_serial: string | null
  not_before: string
  not_after: string
  renew_after: string
}

// The new key and cert are written beside the live ones, then renamed over them: the key's rename
// is the commit point. A crash before it leaves node.key.next (discarded on the next renew or
// status); after it, only node.crt.next (moved into place).
function nextPath(stateDir: string, f: 'key' | 'cert'): string {
  return `${nodePath(stateDir, f)}.next`
}

/** Finishes or discards a swap a crash interrupted. Call with the state-dir lock held. */
async function recoverSwap(stateDir: string): Promise<void> {
  if (await exists(nextPath(stateDir, 'key'))) {
    await rm(nextPath(stateDir, 'key'), {force: true})
    await rm(nextPath(stateDir, 'cert'), {force: true})
  } else if (await exists(nextPath(stateDir, 'cert'))) {
    await rename(nextPath(stateDir, 'cert'), nodePath(stateDir, 'cert'))
  }
}

/**
 * Renews the node certificate over mutual TLS with the current one: a new key and CSR, HQ signs,
 * and the new key and cert replace the old pair. A revoked or expired identity is refused by HQ
 * (CERT_REVOKED, CERT_EXPIRED) and the stored identity stays as it was. The daemon calls this with
 * `ifDue` on a schedule; `jil node renew` without.
 */
export async function renewNode(o: RenewNodeOptions): Promise<NodeRenewResult> {
  const progress = o.progress ?? (() => {})
  const connect = o.connect ?? connectHq
  const {stateDir} = o
  return withStateLock(stateDir, 'jil node renew', async () => {
    await recoverSwap(stateDir)
    const id = await loadNodeIdentity(stateDir)
    const nodeId = id.identity.node_id
    if (o.ifDue && !renewalDue(id.cert, o.clock.now())) {
      return renewResult(id, id.cert, false, null)
    }
    const {generateNodeKey, createNodeCsr} = await csrModule()
    const fresh = await generateNodeKey()
    const csr = await createNodeCsr(nodeId, fresh.keys)
    progress(`Renewing ${nodeId}'s certificate (serial ${id.cert.serial}) at ${id.identity.hq_url}`)
    const client = await connect(id.identity.hq_url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    let res: RenewResponse
    try {
      res = await client.request<RenewResponse>('POST', '/v1/nodes/renew', {csr})
    } catch (err) {
      throw renewRefusal(err, nodeId)
    } finally {
      await client.close()
    }
    const issued = checkIssuedCert(res?.cert, {nodeId, caPem: id.caPem, keyPem: fresh.keyPem})

    await writeSecret(nextPath(stateDir, 'key'), fresh.keyPem)
    await writeFileAtomic(nextPath(stateDir, 'cert'), issued.pem, 0o644)
    await rename(nextPath(stateDir, 'key'), nodePath(stateDir, 'key'))
    await rename(nextPath(stateDir, 'cert'), nodePath(stateDir, 'cert'))
    return renewResult(id, issued.info, true, id.cert.serial)
  })
}

function renewResult(id: NodeIdentity, cert: CertInfo, renewed: boolean, previous: string | null): NodeRenewResult {
  return {
    state_dir: id.stateDir,
    node_id: id.identity.node_id,
    renewed,
    serial: cert.serial,
    previous_serial: previous,
    not_before: cert.notBefore.toISOString(),
    not_after: cert.notAfter.toISOString(),
    renew_after: renewalTime(cert).toISOString(),
  }
}

/** HQ's hints for these two speak to users ("renew it"); a node that cannot renew must rejoin. */
function renewRefusal(err: unknown, nodeId: string): unknown {
  if (!(err instanceof JilError)) return err
  const hints: Record<string, string> = {
    CERT_EXPIRED: `an expired certificate cannot be renewed: ask an ops-lead for a new token (jil hq token create --node-id ${nodeId} …) and run jil node join again`,
    CERT_REVOKED: `${nodeId} was revoked and can never renew or rejoin; admit this machine under a new node id`,
  }
  const hint = hints[err.code]
  if (!hint) return err
  return new JilError(err.code, err.message, {hint, status: err.status, exit: err.exit, ...(err.details ? {details: err.details} : {}), cause: err})
}

// ---------------------------------------------------------------------------------------------
// status

export type HqVerdict = {accepted: true; serial: string; not_after: string} | {accepted: false; code: string; message: string}

export type NodeStatusResult = {
  state_dir: string
  node_id: string
  zone: string
  track: string
  operator: string
  region: string | null
  hq_url: string
  ca_fingerprint: string
  joined_at: string
  cert: {serial: string; not_before: string; not_after: string; renew_after: string; renewal_due: boolean; expired: boolean}
  /** Whether HQ accepts this node's certificate right now (GET /v1/whoami); unreachable counts as not accepted. */
  hq: HqVerdict
}

/**
 * The node's identity, its certificate's dates and HQ's verdict on it now. A refusal by HQ (revoked,
 * expired, unreachable) is part of the answer, not an error; a node that never joined is an error.
 */
export async function nodeStatus(o: {stateDir: string; clock: Clock; connect?: ConnectHq}): Promise<NodeStatusResult> {
  const {stateDir} = o
  const connect = o.connect ?? connectHq
  if ((await exists(nextPath(stateDir, 'key'))) || (await exists(nextPath(stateDir, 'cert')))) {
    // An interrupted renewal: finish it, unless a renewal is running right now.
    await withStateLock(stateDir, 'jil node status', () => recoverSwap(stateDir)).catch((err: unknown) => {
      if (!(err instanceof JilError && err.code === 'STATE_DIR_BUSY')) throw err
    })
  }
  const id = await loadNodeIdentity(stateDir)
  const env = await readNodeEnv(stateDir).catch(() => undefined)
  const now = o.clock.now()
  return {
    state_dir: stateDir,
    node_id: id.identity.node_id,
    zone: id.identity.zone,
    track: id.identity.track,
    operator: id.identity.operator,
    region: env?.JIL_REGION ?? null,
    hq_url: id.identity.hq_url,
    ca_fingerprint: id.identity.ca_fingerprint,
    joined_at: id.identity.joined_at,
    cert: {
      serial: id.cert.serial,
      not_before: id.cert.notBefore.toISOString(),
      not_after: id.cert.notAfter.toISOString(),
      renew_after: renewalTime(id.cert).toISOString(),
      renewal_due: renewalDue(id.cert, now),
      expired: now.getTime() >= id.cert.notAfter.getTime(),
    },
    hq: await askHq(id, connect),
  }
}

async function askHq(id: NodeIdentity, connect: ConnectHq): Promise<HqVerdict> {
  let client: HqClient | undefined
  try {
    client = await connect(id.identity.hq_url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    const me = await client.whoami()
    if (me.kind !== 'node' || me.name !== id.identity.node_id) {
      return {accepted: false, code: 'IDENTITY_MISMATCH', message: `HQ sees this certificate as ${me.kind} ${me.name}, not node ${id.identity.node_id}`}
    }
    return {accepted: true, serial: me.serial, not_after: me.not_after}
  } catch (err) {
    if (err instanceof JilError) return {accepted: false, code: err.code, message: err.message}
    throw err
  } finally {
    await client?.close()
  }
}
