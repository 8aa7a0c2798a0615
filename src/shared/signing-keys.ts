import {createPublicKey, sign as edSign, verify as edVerify} from 'node:crypto'

import {canonicalBytes} from './canonical.js'
import type {TrustedKey} from './manifest.js'
import {keyIdOf, parseEd25519PublicPem} from './signing.js'

/**
 * Image-signing key rotation (TUF-like): each new key carries an endorsement — the previous key's
 * Ed25519 signature over {purpose: "key-rotation", key_id, public_key, created_at} — so a node that
 * pinned a key at join extends its trust along the chain and never takes a key on HQ's word alone.
 */
export type KeyEndorsement = {key_id: string; public_key: string; created_at: string; signed_by: string; signature: string}

export type ServedKey = TrustedKey & {created_at: string; endorsement?: KeyEndorsement | null}

export function endorsementPayload(k: {key_id: string; public_key: string; created_at: string}): Uint8Array {
  return canonicalBytes({purpose: 'key-rotation', key_id: k.key_id, public_key: k.public_key, created_at: k.created_at})
}

/** The previous key (PKCS#8 PEM) endorses the next one. */
export function endorse(previous: {keyId: string; privatePem: string}, next: {key_id: string; public_key: string; created_at: string}): KeyEndorsement {
  const signature = edSign(null, endorsementPayload(next), previous.privatePem).toString('base64')
  return {...next, signed_by: previous.keyId, signature}
}

/**
 * Extends a pinned key set with the served keys whose endorsement chains back to a pinned key, and
 * takes retirement dates only for keys already trusted. Keys that do not chain are left out.
 */
export function extendTrust(pinned: readonly TrustedKey[], served: readonly ServedKey[]): TrustedKey[] {
  const trusted = new Map(pinned.map((k) => [k.key_id, {...k}]))
  let grew = true
  while (grew) {
    grew = false
    for (const k of served) {
      if (trusted.has(k.key_id) || !k.endorsement) continue
      const e = k.endorsement
      const signer = trusted.get(e.signed_by)
      if (!signer || e.key_id !== k.key_id || e.public_key !== k.public_key) continue
      let ok = false
      try {
        ok = keyIdOf(parseEd25519PublicPem(k.public_key)) === k.key_id && edVerify(null, endorsementPayload(e), createPublicKey(signer.public_key), Buffer.from(e.signature, 'base64'))
      } catch {
        ok = false
      }
      if (ok) {
        trusted.set(k.key_id, {key_id: k.key_id, public_key: k.public_key})
        grew = true
      }
    }
  }
  for (const k of served) {
    const t = trusted.get(k.key_id)
    if (t && k.retired_at && t.public_key === k.public_key) t.retired_at = k.retired_at
  }
  return [...trusted.values()]
}
