import type {Dispatcher} from 'undici'

import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {certFingerprint, derToPem, pemToDer} from '../shared/pki.js'

/** A CA certificate is a few hundred bytes; anything past this is not one. */
const MAX_CA_BYTES = 64 * 1024

/**
 * Fetches HQ's CA (`GET /v1/ca`) and pins it: returns the CA only if the SHA-256 of its DER equals
 * the fingerprint given out of band (DESIGN.md §4, never trust on first use).
 *
 * This is the one request jil makes without verifying the server: the node cannot verify HQ's
 * certificate before it has HQ's CA. So it sends nothing but this GET over that connection, and
 * trusts nothing it received until the fingerprint matches; the join itself then goes over a new
 * connection that verifies HQ's server certificate against the pinned CA.
 */
export async function fetchPinnedCa(hqUrl: string, fingerprint: string): Promise<string> {
  const undici = await import('undici')
  const agent = new undici.Agent({connect: {rejectUnauthorized: false}, connectTimeout: 10_000})
  const url = new URL('/v1/ca', hqUrl).toString()
  let body: Uint8Array
  try {
    let res: Dispatcher.ResponseData
    try {
      res = await undici.request(url, {method: 'GET', dispatcher: agent, headers: {accept: 'application/x-pem-file'}, headersTimeout: 30_000, bodyTimeout: 30_000})
    } catch (err) {
      throw unreachable(hqUrl, err)
    }
    body = await readCapped(res)
    if (res.statusCode !== 200) {
      throw new JilError('HQ_ERROR', `HQ at ${hqUrl} answered ${res.statusCode} to GET /v1/ca`, {hint: 'check that --hq points to a jil HQ'})
    }
  } finally {
    await agent.close()
  }
  let der: Buffer
  try {
    der = pemToDer(new TextDecoder().decode(body))
  } catch {
    throw new JilError('CA_INVALID', `HQ at ${hqUrl} did not answer GET /v1/ca with a PEM certificate`, {hint: 'check that --hq points to a jil HQ'})
  }
  const actual = certFingerprint(der)
  if (actual !== fingerprint) {
    throw new JilError('CA_FINGERPRINT_MISMATCH', `HQ at ${hqUrl} presented CA ${actual}, not the pinned ${fingerprint}; nothing was sent to it`, {
      hint: 'check --ca-fingerprint against the one jil hq init printed for this HQ, and the --hq URL; if both are right, the connection is being intercepted',
      details: {expected: fingerprint, actual},
    })
  }
  // The pinned CA is exactly the DER that was fingerprinted (anything else in the body is dropped).
  return derToPem(der)
}

async function readCapped(res: Dispatcher.ResponseData): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of res.body) {
    const c = chunk as Uint8Array
    size += c.byteLength
    if (size > MAX_CA_BYTES) {
      res.body.destroy()
      throw new JilError('CA_INVALID', `HQ's answer to GET /v1/ca is larger than ${MAX_CA_BYTES} bytes`, {hint: 'check that --hq points to a jil HQ'})
    }
    chunks.push(c)
  }
  return Buffer.concat(chunks)
}

function unreachable(hqUrl: string, err: unknown): JilError {
  const code = systemCode(err) ?? (err as {code?: string}).code
  return new JilError('HQ_UNREACHABLE', `cannot reach HQ at ${hqUrl}${code ? ` (${code})` : `: ${messageOf(err)}`}`, {
    hint: 'check the --hq URL (JIL_HQ_URL) and that HQ runs',
    cause: err,
  })
}
