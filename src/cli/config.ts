import {readFile} from 'node:fs/promises'

import {configBytes, configNameFromFile, configNameProblem, MAX_CONFIG_BYTES, nulCharacterAt, sha256Hex} from '../shared/config-docs.js'
import {JilError, usageError} from '../shared/errors.js'
import {fileError} from '../shared/files.js'
import {parseNodeId, parseZoneFlag} from './rollouts.js'

/** A config document read from a file, checked as HQ will check it. */
export type ConfigFile = {name: string; content: unknown; bytes: number; sha256: string}

/** `--jurisdiction Z | --node ID`: exactly one (else a usage error, exit 2). */
export function parseConfigTarget(flags: {jurisdiction?: string | undefined; node?: string | undefined}, example: string): {zone: string} | {node: string} {
  if ((flags.jurisdiction === undefined) === (flags.node === undefined)) {
    throw usageError('TARGET_REQUIRED', flags.node === undefined ? 'say where: --jurisdiction ZONE or --node ID' : 'give --jurisdiction or --node, not both', `e.g. ${example}`)
  }
  return flags.jurisdiction !== undefined ? {zone: parseZoneFlag(flags.jurisdiction)} : {node: parseNodeId(flags.node!, '--node')}
}

/**
 * Reads a config document: the file must be JSON (any JSON value) of at most 256 KiB canonical,
 * and its name — `--name`, else the file's base name without extension, lower-cased — a valid
 * config name. Anything else is a usage error (exit 2) before anything is sent.
 */
export async function readConfigFile(path: string, name?: string): Promise<ConfigFile> {
  let docName: string
  if (name !== undefined) {
    const bad = configNameProblem(name)
    if (bad) throw usageError('CONFIG_NAME_INVALID', `--name: ${bad}`, 'name the document like a file: fees-ch, zone.params')
    docName = name
  } else {
    docName = configNameFromFile(path)
  }
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw fileError(path, 'config file', err)
  }
  let content: unknown
  try {
    content = JSON.parse(text)
  } catch (err) {
    throw usageError('CONFIG_FILE_INVALID', `${path} is not JSON: ${(err as Error).message}`, 'a config document is a JSON file (an object, typically)')
  }
  const nul = nulCharacterAt(content)
  if (nul) throw usageError('CONFIG_FILE_INVALID', `${path} holds a NUL character (at ${nul}), which HQ cannot store`, 'remove \\u0000 from the document')
  let canonical: string
  try {
    canonical = configBytes(content)
  } catch (err) {
    throw usageError('CONFIG_FILE_INVALID', `${path} cannot be written as canonical JSON: ${err instanceof JilError ? err.message : String(err)}`, 'use plain JSON')
  }
  const bytes = Buffer.byteLength(canonical)
  if (bytes > MAX_CONFIG_BYTES) throw usageError('CONFIG_TOO_LARGE', `${path} is ${bytes} bytes of canonical JSON; the limit is ${MAX_CONFIG_BYTES}`, 'split it into several documents')
  return {name: docName, content, bytes, sha256: sha256Hex(canonical)}
}
