import {rename, rm} from 'node:fs/promises'

import type {Clock} from '../../shared/clock.js'
import type {Db} from '../../shared/db/types.js'
import {exists, writeFileAtomic, writeSecret} from '../../shared/files.js'
import {certInfo, renewalDue} from '../../shared/pki.js'
import {hqPath} from '../datadir.js'
import {recordCertificate} from '../store/index.js'
import type {CertificateAuthority} from './ca.js'

/** Whether HQ's certificate (PEM) is due for renewal: the shared 2/3-of-lifetime rule. */
export function serverRenewalDue(pem: string, now: Date): boolean {
  return renewalDue(certInfo(pem), now)
}

/**
 * HQ's own TLS certificate renews itself: when due, a new one is issued for the same hostnames,
 * written to the data dir and recorded. Returns the new key/cert, or undefined when not due.
 */
export async function renewServerCertIfDue(o: {dataDir: string; ca: CertificateAuthority; db: Db; clock: Clock; hostnames: string[]; currentPem: string}): Promise<{key: string; cert: string} | undefined> {
  if (!serverRenewalDue(o.currentPem, o.clock.now())) return undefined
  const issued = await o.ca.issueServer(o.hostnames)
  await recordCertificate(o.db, {serial: issued.serial, kind: 'server', subject: o.hostnames[0] ?? 'localhost', fingerprint: issued.fingerprint, not_before: issued.notBefore, not_after: issued.notAfter})
  // Key and certificate change as a pair: both are written aside first, then renamed key-then-cert;
  // completeServerCertSwap finishes a swap a crash interrupted, so HQ never starts with a mismatched pair.
  const key = hqPath(o.dataDir, 'serverKey')
  const cert = hqPath(o.dataDir, 'serverCert')
  await writeSecret(`${key}.next`, issued.keyPem)
  await writeFileAtomic(`${cert}.next`, issued.pem, 0o644)
  await completeServerCertSwap(o.dataDir)
  return {key: issued.keyPem, cert: issued.pem}
}

/** Finishes an interrupted server key/cert swap (see renewServerCertIfDue); a no-op when none is pending. */
export async function completeServerCertSwap(dataDir: string): Promise<void> {
  const key = hqPath(dataDir, 'serverKey')
  const cert = hqPath(dataDir, 'serverCert')
  if (!(await exists(`${cert}.next`))) {
    // A lone key.next (crash before the cert was written aside): the old pair is intact; drop it.
    await rm(`${key}.next`, {force: true})
    return
  }
  if (await exists(`${key}.next`)) await rename(`${key}.next`, key)
  await rename(`${cert}.next`, cert)
}
