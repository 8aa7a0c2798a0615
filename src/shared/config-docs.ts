import {createHash} from 'node:crypto'
import {basename, extname} from 'node:path'

import {canonicalJson} from './canonical.js'
import {JilError} from './errors.js'

/**
 * Config documents (issue 7, config push): versioned JSON documents — compliance zone configs, fee
 * schedules, parameters — pushed per zone or per node at HQ, carried in the node's signed desired
 * state and written by the node under `<state-dir>/config/<name>.json`.
 *
 * Pure and free of TypeBox, so that node agents stay light: HQ, node and CLI share the name rule,
 * the hash and the check a node makes of the documents it is handed.
 */

export type ConfigScope = 'zone' | 'node'
export const CONFIG_SCOPES: readonly ConfigScope[] = ['zone', 'node']

/** One document of a node's effective config, as the desired state carries it. */
export type ConfigDoc = {
  /** The file name without `.json`: lower case, digits, `.`, `_`, `-`; never `..`. */
  name: string
  /** Where it was pushed: the node's zone, or the node itself (a node document shadows the zone's of the same name). */
  scope: ConfigScope
  /** 1, 2, 3… per scope, target and name. */
  version: number
  /** HQ-wide push order: a node's config version is the highest seq among its effective documents. */
  seq: number
  /** Lowercase hex SHA-256 of the RFC 8785 canonical JSON of `content`: the bytes the node writes. */
  sha256: string
  content: unknown
}

/** A document without its content (listings, `jil fleet node`, the node's record). */
export type ConfigDocRef = Omit<ConfigDoc, 'content'>

/** The file name rule (the same CHECK guards HQ's table). */
export const CONFIG_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** The largest document HQ accepts: 256 KiB of canonical JSON. */
export const MAX_CONFIG_BYTES = 256 * 1024

const SHA256_HEX = /^[0-9a-f]{64}$/

/** Why a name is not a safe config file name, or undefined when it is. */
export function configNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'the name is not a string'
  if (!CONFIG_NAME_PATTERN.test(name)) return `${JSON.stringify(name.slice(0, 80))} is not a config name (1-64 of a-z 0-9 . _ -, starting with a letter or digit)`
  if (name.includes('..')) return `${JSON.stringify(name)} holds "..", which no config name may`
  return undefined
}

/** The canonical JSON a document's content is hashed over and written as. */
export function configBytes(content: unknown): string {
  return canonicalJson(content)
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The sha256 of a document's content (of its canonical JSON). */
export function configSha256(content: unknown): string {
  return sha256Hex(configBytes(content))
}

/** A node's config version: the highest seq among its effective documents (0: none). */
export function configVersionOf(docs: readonly Pick<ConfigDoc, 'seq'>[]): number {
  return docs.reduce((max, d) => Math.max(max, d.seq), 0)
}

/**
 * Why a desired state's `config` cannot be applied, or undefined when it can: a list of documents,
 * each with a safe name (no two alike), a scope, positive integer version and seq, and a sha256
 * that is the hash of its content's canonical JSON. A node refuses the whole document otherwise.
 */
export function configDocsProblem(config: unknown): string | undefined {
  if (!Array.isArray(config)) return 'config is not a list of documents'
  const names = new Set<string>()
  for (const [i, d] of config.entries()) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) return `config[${i}] is not a document`
    const doc = d as Record<string, unknown>
    const bad = configNameProblem(doc.name)
    if (bad) return `config[${i}]: ${bad}`
    const name = doc.name as string
    if (names.has(name)) return `config document ${name} is listed twice`
    names.add(name)
    if (doc.scope !== 'zone' && doc.scope !== 'node') return `config document ${name} has no valid scope`
    if (!Number.isSafeInteger(doc.version) || (doc.version as number) < 1) return `config document ${name} has no valid version`
    if (!Number.isSafeInteger(doc.seq) || (doc.seq as number) < 1) return `config document ${name} has no valid seq`
    if (typeof doc.sha256 !== 'string' || !SHA256_HEX.test(doc.sha256)) return `config document ${name} has no valid sha256`
    if (!('content' in doc)) return `config document ${name} has no content`
    let actual: string
    try {
      actual = configSha256(doc.content)
    } catch {
      return `config document ${name} has content that is not canonical JSON`
    }
    if (actual !== doc.sha256) return `config document ${name}: its content does not match its sha256`
  }
  return undefined
}

/**
 * The name a file gives a pushed document: its base name without extension, lower-cased
 * (`Fees-CH.json` → `fees-ch`). Refused (usage error) when that is not a valid name.
 */
export function configNameFromFile(path: string): string {
  const base = basename(path)
  const name = base.slice(0, base.length - extname(base).length).toLowerCase()
  const bad = configNameProblem(name)
  if (bad) throw new JilError('CONFIG_NAME_INVALID', `cannot name the document after ${base}: ${bad}`, {exit: 2, hint: 'rename the file or pass --name NAME'})
  return name
}

/** Strings holding U+0000, which PostgreSQL's jsonb cannot store: the path of the first, or undefined. */
export function nulCharacterAt(value: unknown, path = '$'): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) {
      const at = nulCharacterAt(v, `${path}[${i}]`)
      if (at) return at
    }
    return undefined
  }
  if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k.includes('\u0000')) return `${path} (a key)`
      const at = nulCharacterAt(v, `${path}.${k}`)
      if (at) return at
    }
  }
  return undefined
}
