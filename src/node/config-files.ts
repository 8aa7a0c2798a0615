import {chmod, lstat, mkdir, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {configBytes, configNameProblem, sha256Hex, type ConfigDoc} from '../shared/config-docs.js'
import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {writeFileAtomic} from '../shared/files.js'

/**
 * The node's side of config push: the documents of its desired state, each written atomically
 * (temp file + rename) to `<state-dir>/config/<name>.json` as the canonical JSON HQ hashed, so
 * `sha256sum config/<name>.json` prints the document's sha256. A record of what jil wrote
 * (`config/.applied.json`) says which files are jil's to remove once HQ no longer lists them; files
 * jil did not write are never touched. Services read their config from this directory.
 */

export const CONFIG_DIR = 'config'
/** What jil wrote into the config dir and the config version that made it so. */
export const APPLIED_RECORD = '.applied.json'

export type AppliedConfig = {config_version: number; docs: {name: string; seq: number; version: number; sha256: string}[]}

/** What applying a desired state's config did (ok) or why it could not (the node's config is then as it was, or partly new). */
export type ConfigApplyResult =
  | {ok: true; config_version: number; previous_version: number; written: string[]; removed: string[]; unchanged: string[]}
  | {ok: false; config_version: number; previous_version: number; error: {code: string; message: string}}

export function configDir(stateDir: string): string {
  return join(stateDir, CONFIG_DIR)
}

/** The record of the last config applied (undefined: none yet, or a damaged record, which counts as none). */
export async function readAppliedConfig(stateDir: string): Promise<AppliedConfig | undefined> {
  let text: string
  try {
    text = await readFile(join(configDir(stateDir), APPLIED_RECORD), 'utf8')
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return undefined
    throw new JilError('CONFIG_UNREADABLE', `cannot read the config record: ${systemCode(err) ?? messageOf(err)}`, {hint: `check the permissions of ${configDir(stateDir)}`, cause: err})
  }
  try {
    const v = JSON.parse(text) as Partial<AppliedConfig>
    if (!Number.isSafeInteger(v.config_version) || !Array.isArray(v.docs)) return undefined
    // A name that is not a config name (a hand-edited record) is never a path jil removes.
    return {config_version: v.config_version!, docs: v.docs.filter((d) => d && configNameProblem(d.name) === undefined)}
  } catch {
    return undefined
  }
}

async function writeRecord(stateDir: string, record: AppliedConfig): Promise<void> {
  await writeFileAtomic(join(configDir(stateDir), APPLIED_RECORD), JSON.stringify(record, null, 2) + '\n', 0o644)
}

/** The sha256 of a regular file's bytes, or undefined when there is none (missing, a link, a directory). */
async function fileSha256(path: string): Promise<string | undefined> {
  try {
    const st = await lstat(path)
    if (!st.isFile()) return undefined
    return sha256Hex(await readFile(path))
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return undefined
    throw new JilError('CONFIG_UNREADABLE', `cannot read ${path}: ${systemCode(err) ?? messageOf(err)}`, {hint: 'check the permissions of the config dir', cause: err})
  }
}

/**
 * Brings the config dir to `docs` (a verified desired state's config): writes each document whose
 * file is missing or differs, removes the files jil wrote for documents no longer listed, then
 * records `configVersion` as applied. Before writing, the record lists the old and the new names
 * together, so a crash half-way never leaves a file jil wrote without a record of it.
 */
export async function applyConfigDocs(stateDir: string, configVersion: number, docs: readonly ConfigDoc[]): Promise<ConfigApplyResult & {ok: true}> {
  for (const d of docs) {
    const bad = configNameProblem(d.name)
    if (bad) throw new JilError('CONFIG_NAME_INVALID', bad, {hint: 'HQ sent a config name this node refuses; check the HQ and node versions'})
  }
  const dir = configDir(stateDir)
  try {
    // 0750 when jil creates it (whatever the umask); a mode the operator set later is theirs to keep.
    if ((await mkdir(dir, {recursive: true, mode: 0o750})) !== undefined) await chmod(dir, 0o750)
  } catch (err) {
    throw new JilError('CONFIG_UNWRITABLE', `cannot create ${dir}: ${systemCode(err) ?? messageOf(err)}`, {hint: `check the permissions of ${stateDir}`, cause: err})
  }
  const previous = await readAppliedConfig(stateDir)
  const previousVersion = previous?.config_version ?? 0
  const listed = new Set(docs.map((d) => d.name))
  const refs = docs.map((d) => ({name: d.name, seq: d.seq, version: d.version, sha256: d.sha256}))
  const gone = (previous?.docs ?? []).filter((d) => !listed.has(d.name))
  const known = new Set((previous?.docs ?? []).map((d) => d.name))
  if (docs.some((d) => !known.has(d.name))) await writeRecord(stateDir, {config_version: previousVersion, docs: [...(previous?.docs ?? []), ...refs.filter((r) => !known.has(r.name))]})

  const written: string[] = []
  const unchanged: string[] = []
  for (const d of docs) {
    const path = join(dir, `${d.name}.json`)
    const bytes = configBytes(d.content)
    if (sha256Hex(bytes) !== d.sha256) throw new JilError('CONFIG_MISMATCH', `config document ${d.name}: its content does not match its sha256`, {hint: 'HQ sent a document that does not hold; nothing of it was written'})
    if ((await fileSha256(path)) === d.sha256) {
      unchanged.push(d.name)
      continue
    }
    await writeFileAtomic(path, bytes, 0o644)
    written.push(d.name)
  }
  const removed: string[] = []
  for (const d of gone) {
    const path = join(dir, `${d.name}.json`)
    try {
      await rm(path)
      removed.push(d.name)
    } catch (err) {
      if (systemCode(err) !== 'ENOENT') throw new JilError('CONFIG_UNWRITABLE', `cannot remove ${path}: ${systemCode(err) ?? messageOf(err)}`, {hint: `check the permissions of ${dir}`, cause: err})
    }
  }
  const record: AppliedConfig = {config_version: configVersion, docs: refs}
  if (JSON.stringify(record) !== JSON.stringify(previous)) await writeRecord(stateDir, record)
  return {ok: true, config_version: configVersion, previous_version: previousVersion, written, removed, unchanged}
}

/**
 * applyConfigDocs for an update run: a failure (a full disk, a permission) is a result, not a throw,
 * so the run still reconciles the services (a stop must work whatever the config dir's state).
 */
export async function applyDesiredConfig(stateDir: string, configVersion: number, docs: readonly ConfigDoc[]): Promise<ConfigApplyResult> {
  try {
    return await applyConfigDocs(stateDir, configVersion, docs)
  } catch (err) {
    if (!(err instanceof JilError)) throw err
    const previous = await readAppliedConfig(stateDir).catch(() => undefined)
    return {ok: false, config_version: configVersion, previous_version: previous?.config_version ?? 0, error: {code: err.code, message: err.message}}
  }
}
