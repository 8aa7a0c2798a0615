import {X509Certificate} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {connect} from 'node:tls'

import {pino} from 'pino'
import {describe, expect, it} from 'vitest'

import {serverRenewalDue as renewalDue} from '../../src/hq/ca/server-cert.js'
import {hqPath} from '../../src/hq/datadir.js'
import {startHq} from '../../src/hq/server.js'
import {ManualClock} from '../../src/shared/clock.js'
import {startTestHq} from '../helpers/hq.js'

function servedCert(url: string, ca: string): Promise<X509Certificate> {
  const {hostname, port} = new URL(url)
  return new Promise((resolve, reject) => {
    const sock = connect({host: hostname, port: Number(port), ca, servername: 'localhost'}, () => {
      const der = sock.getPeerCertificate().raw
      sock.end()
      resolve(new X509Certificate(der))
    })
    sock.on('error', reject)
  })
}

describe("HQ's own server certificate", () => {
  it('is due for renewal at 2/3 of its lifetime', async () => {
    const t = await startTestHq()
    try {
      const pem = await readFile(hqPath(t.dataDir, 'serverCert'), 'utf8')
      const c = new X509Certificate(pem)
      const from = new Date(c.validFrom).getTime()
      const to = new Date(c.validTo).getTime()
      expect(renewalDue(pem, new Date(from + ((to - from) * 2) / 3 - 60_000))).toBe(false)
      expect(renewalDue(pem, new Date(from + ((to - from) * 2) / 3 + 60_000))).toBe(true)
    } finally {
      await t.stop()
    }
  })

  it('renews itself when HQ starts past 2/3 of its lifetime: a new certificate for the same names, written and recorded', async () => {
    const t = await startTestHq()
    const before = await servedCert(t.hq.url, t.admin.ca)
    await t.hq.close()
    // Seventy days on (of ninety): HQ starts, renews, serves a new certificate for the same names.
    const later = new ManualClock(Date.now() + 70 * 86_400_000)
    const hq = await startHq({dataDir: t.dataDir, listen: {host: '127.0.0.1', port: 0}, clock: later, logger: pino({level: 'silent'}), version: 't'})
    try {
      const fileCert = new X509Certificate(await readFile(hqPath(t.dataDir, 'serverCert'), 'utf8'))
      expect(fileCert.serialNumber).not.toBe(before.serialNumber)
      expect(fileCert.subjectAltName).toBe(before.subjectAltName)
      expect(new Date(fileCert.validFrom).getTime()).toBeGreaterThan(Date.now() + 69 * 86_400_000)
      // (Its notBefore lies in the real clock's future, so it is checked from the file, not over TLS.)
      const {rows} = await hq.db.query<{n: number}>("SELECT count(*)::int AS n FROM certificates WHERE kind = 'server'")
      expect(rows[0]!.n).toBe(2)
    } finally {
      await hq.close()
      await t.stop().catch(() => {})
    }
  })
})
