import canonicalize from 'canonicalize'

import {JilError} from './errors.js'

/**
 * RFC 8785 (JCS) canonical JSON: the bytes every signature and every audit hash in jil is made
 * over, so that anyone can recompute them with any JCS implementation.
 */
export function canonicalJson(value: unknown): string {
  let out: string | undefined
  try {
    out = canonicalize(value)
  } catch (err) {
    throw new JilError('NOT_CANONICALIZABLE', `value cannot be written as canonical JSON: ${(err as Error).message}`, {status: 400})
  }
  if (out === undefined) throw new JilError('NOT_CANONICALIZABLE', 'value cannot be written as canonical JSON', {status: 400})
  return out
}

export function canonicalBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value))
}
