import canonicalize from 'canonicalize'

import {JilError} from './errors.js'

/**
 * RFC 8785 (JCS) canonical JSON: the bytes every signature and every audit hash in jil is made
 * over, so that anyone can recompute them with any JCS implementation.
 *
 * Two implementations behind one function: `canonicalize` (the reference, for anything) and a fast
 * path for plain JSON data — what JSON.parse produces, which is every audit entry a verifier walks
 * (a million of them in `jil audit verify`; the reference costs ~7 µs each there). The fast path is
 * the same algorithm — keys sorted by UTF-16 code units, ECMAScript number and string serialisation,
 * lone surrogates refused — and a test holds it equal to the reference on a varied corpus.
 */
export function canonicalJson(value: unknown): string {
  try {
    const fast = plainCanonical(value)
    if (fast !== undefined) return fast
  } catch (err) {
    if (err instanceof JilError) throw err
  }
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

const SURROGATE = /[\uD800-\uDFFF]/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Canonical JSON of plain data (null, booleans, finite numbers, strings, arrays, plain objects),
 * or undefined when the value holds anything else (Dates, toJSON, undefined, class instances…),
 * which the reference implementation then handles.
 */
function plainCanonical(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      if (SURROGATE.test(v) && LONE_SURROGATE.test(v)) throw new JilError('NOT_CANONICALIZABLE', 'a string holds a lone surrogate', {status: 400})
      return JSON.stringify(v)
    case 'number':
      if (!Number.isFinite(v)) throw new JilError('NOT_CANONICALIZABLE', 'NaN and Infinity have no JSON form', {status: 400})
      return JSON.stringify(v)
    case 'boolean':
      return v ? 'true' : 'false'
    case 'object': {
      if (v === null) return 'null'
      if (Array.isArray(v)) {
        let out = '['
        for (let i = 0; i < v.length; i++) {
          const s = plainCanonical(v[i])
          if (s === undefined) return undefined
          out += i === 0 ? s : ',' + s
        }
        return out + ']'
      }
      const proto = Object.getPrototypeOf(v) as unknown
      if (proto !== Object.prototype && proto !== null) return undefined
      const obj = v as Record<string, unknown>
      const keys = Object.keys(obj).sort()
      let out = '{'
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i]!
        const s = plainCanonical(obj[k])
        if (s === undefined) return undefined
        const key = plainCanonical(k)!
        out += (i === 0 ? '' : ',') + key + ':' + s
      }
      return out + '}'
    }
    default:
      return undefined
  }
}
