import {X509Certificate} from 'node:crypto'

import type {Clock} from '../../shared/clock.js'
import type {Db} from '../../shared/db/types.js'
import {writeFileAtomic, writeSecret} from '../../shared/files.js'
import {hqPath} from '../datadir.js'
import {recordCertificate} from '../store/index.js'
import type {CertificateAuthority} from './ca.js'

/** Renewal is due at 2/3 of a certificate's lifetime (as step-ca's renewer does). */
export function renewalDue(pem: string, now: Date): boolean {
  const c = new X509Certificate(pem)
  const from = new Date(c.validFrom).getTime()
  const to = new Date(c.validTo).getTime()
  return now.getTime() >= from + ((to - from) * 2) / 3
}

/**
 * HQ's own TLS certificate renews itself: when due, a new one is issued for the same hostnames,
 * written to the data dir and recorded. Returns the new key/cert, or undefined when not due.
 */
export async function renewServerCertIfDue(o: {dataDir: string; ca: CertificateAuthority; db: Db; clock: Clock; hostnames: string[]; currentPem: string}): Promise<{key: string; cert: string} | undefined> {
  if (!renewalDue(o.currentPem, o.clock.now())) return undefined
  const issued = await o.ca.issueServer(o.hostnames)
  await recordCertificate(o.db, {serial: issued.serial, kind: 'server', subject: o.hostnames[0] ?? 'localhost', fingerprint: issued.fingerprint, not_before: issued.notBefore, not_after: issued.notAfter})
  await writeSecret(hqPath(o.dataDir, 'serverKey'), issued.keyPem)
  await writeFileAtomic(hqPath(o.dataDir, 'serverCert'), issued.pem, 0o644)
  return {key: issued.keyPem, cert: issued.pem}
}
