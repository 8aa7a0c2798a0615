import type {Server as HttpsServer} from 'node:https'
import type {TLSSocket} from 'node:tls'

import type {Clock} from '../../shared/clock.js'
import {LOCKS, type Db, type Queryable} from '../../shared/db/types.js'
import {normalizeSerial} from '../../shared/pki.js'
import {signCrl, type SignedCrl} from '../ca/crl.js'

/**
 * Live TLS sockets by the serial of the client certificate they presented, so a revocation can
 * close them at once (DESIGN.md §4: revoke = instant lockout, keep-alive connections included).
 */
export class SocketRegistry {
  private readonly bySerial = new Map<string, Set<TLSSocket>>()

  attach(server: HttpsServer): void {
    server.on('secureConnection', (sock: TLSSocket) => {
      const peer = sock.getPeerCertificate()
      if (!peer || !peer.serialNumber) return
      const serial = normalizeSerial(peer.serialNumber)
      let set = this.bySerial.get(serial)
      if (!set) this.bySerial.set(serial, (set = new Set()))
      set.add(sock)
      sock.once('close', () => {
        set.delete(sock)
        if (set.size === 0) this.bySerial.delete(serial)
      })
    })
  }

  /** Destroys every live socket that presented one of `serials`, except `keep` (closed after its response). */
  destroy(serials: Iterable<string>, keep?: TLSSocket): number {
    let n = 0
    for (const s of serials) {
      for (const sock of this.bySerial.get(normalizeSerial(s)) ?? []) {
        if (sock === keep) continue
        sock.destroy()
        n++
      }
    }
    return n
  }

  /** Live (not destroyed) sockets of a serial. */
  count(serial: string): number {
    return [...(this.bySerial.get(normalizeSerial(serial)) ?? [])].filter((s) => !s.destroyed).length
  }
}

/** Marks certificates revoked in the caller's transaction; returns their serials. */
export async function revokeCertificates(tx: Queryable, where: {kind: 'node' | 'user'; subject: string}, reason: string, now: Date): Promise<string[]> {
  const {rows} = await tx.query<{serial: string}>(
    `UPDATE certificates SET revoked_at = $3, revoke_reason = $4
      WHERE kind = $1 AND subject = $2 AND revoked_at IS NULL RETURNING serial`,
    [where.kind, where.subject, now, reason],
  )
  return rows.map((r) => r.serial)
}

const CRL_VALID_MS = 24 * 3_600_000

/** HQ's CRL: re-signed on every revocation and on a schedule, numbers always increasing. */
export class CrlService {
  constructor(
    private readonly db: Db,
    private readonly ca: {certPem: string; keyPem: string},
    private readonly clock: Clock,
  ) {}

  async latest(): Promise<SignedCrl> {
    const {rows} = await this.db.query<{number: number; this_update: Date; next_update: Date; der: Uint8Array}>(
      'SELECT number, this_update, next_update, der FROM crls ORDER BY number DESC LIMIT 1',
    )
    const r = rows[0]
    if (!r || r.next_update.getTime() - this.clock.now().getTime() < CRL_VALID_MS / 2) return this.resign()
    const der = new Uint8Array(r.der)
    return {der, pem: pemOf(der), number: r.number, thisUpdate: r.this_update, nextUpdate: r.next_update}
  }

  /**
   * Signs a new CRL over every revoked serial. One transaction under a transaction-scoped advisory
   * lock: two revocations at once cannot publish a higher-numbered CRL that misses one of them.
   */
  async resign(): Promise<SignedCrl> {
    return this.db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [LOCKS.crl.toString()])
      const {rows: revoked} = await tx.query<{serial: string; revoked_at: Date}>(
        "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL AND kind IN ('node', 'user') ORDER BY revoked_at",
      )
      const {rows: num} = await tx.query<{n: number}>('SELECT coalesce(max(number), 0)::int8 + 1 AS n FROM crls')
      const crl = await signCrl({
        caCertPem: this.ca.certPem,
        caKeyPem: this.ca.keyPem,
        revoked: revoked.map((r) => ({serial: r.serial, revokedAt: r.revoked_at})),
        number: num[0]!.n,
        now: this.clock.now(),
        validForMs: CRL_VALID_MS,
      })
      await tx.query('INSERT INTO crls (number, this_update, next_update, der) VALUES ($1, $2, $3, $4)', [crl.number, crl.thisUpdate, crl.nextUpdate, Buffer.from(crl.der)])
      return crl
    })
  }
}

function pemOf(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64')
  return `-----BEGIN X509 CRL-----\n${b64.replace(/.{1,64}/g, '$&\n')}-----END X509 CRL-----\n`
}

/**
 * Each HQ replica polls for revocations made by any replica (they share the database) and closes
 * the live sockets of those serials within a second. New requests are refused by the request hook
 * regardless; this closes idle keep-alive connections too. One owned loop, stopped with HQ.
 */
export class RevocationWatcher {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private since: Date

  constructor(
    private readonly db: Db,
    private readonly sockets: SocketRegistry,
    clock: Clock,
    private readonly onError: (err: unknown) => void = () => {},
    private readonly everyMs = 1000,
  ) {
    this.since = new Date(clock.now().getTime() - 60_000)
  }

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.tick().then(() => undefined).finally(() => (this.running = undefined)) // single-flight
    }, this.everyMs)
    this.timer.unref()
  }

  async tick(): Promise<number> {
    const {rows} = await this.db
      .query<{serial: string; revoked_at: Date}>('SELECT serial, revoked_at FROM certificates WHERE revoked_at >= $1', [this.since])
      .catch((err: unknown) => {
        this.onError(err)
        return {rows: [] as {serial: string; revoked_at: Date}[]}
      })
    let n = 0
    for (const r of rows) n += this.sockets.destroy([r.serial])
    const newest = rows.reduce((t, r) => Math.max(t, r.revoked_at.getTime()), 0)
    // Keep a minute of overlap: replicas' clocks and commit order differ.
    if (newest > 0) this.since = new Date(Math.max(this.since.getTime(), newest - 60_000))
    return n
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.running
  }
}
