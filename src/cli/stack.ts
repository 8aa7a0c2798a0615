import {readFile} from 'node:fs/promises'

import type {FleetNode} from '../shared/api.js'
import type {UserBundle} from '../shared/bundle.js'
import {JilError, usageError} from '../shared/errors.js'
import {fileError} from '../shared/files.js'
import type {HqClient, StackView} from '../shared/hq-client.js'
import type {Track} from '../shared/manifest.js'
import type {StackSpec} from '../shared/stack.js'
import type {UserSignature} from '../shared/user-signature.js'
import type {ImageListRow} from './releases.js'

// The schema (TypeBox) and the signing code load only in the commands that need them: `fleet nodes`
// uses this module for its rendering helpers alone.

/**
 * Reads a stack spec file and checks it against the same schema HQ enforces, so a bad file is a
 * usage error naming the field before anything is sent.
 */
export async function readStackSpecFile(path: string): Promise<StackSpec> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw fileError(path, 'stack spec file', err)
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw usageError('STACK_FILE_INVALID', `${path} is not JSON: ${(err as Error).message}`, 'a stack spec is a JSON object {"services": [...]}')
  }
  const [{Value}, {StackSpecSchema, stackSpecProblem}] = await Promise.all([import('@sinclair/typebox/value'), import('../shared/stack-schema.js')])
  if (!Value.Check(StackSpecSchema, doc)) {
    const e = Value.Errors(StackSpecSchema, doc).First()
    const field = e?.path.replace(/^\//, '').replace(/\//g, '.') || '(top level)'
    throw usageError('STACK_FILE_INVALID', `${path}: field ${field}: ${e?.message ?? 'is invalid'}`, 'fix the named field; see jil hq stack set --help for the format')
  }
  const problem = stackSpecProblem(doc)
  if (problem) throw usageError('STACK_FILE_INVALID', `${path}: ${problem}`, 'give each service a unique name')
  return doc
}

export type StackPinResult = {track: string; service: string; version: string; digest: string; from: string | null; rollback: boolean}

/**
 * Pins a service's version on a track. A lower version than the current pin is a rollback: it is
 * only sent with `confirm` (the --rollback flag), signed here with the user's own key over the
 * exact track, service, image, digest and version, so nodes can check it without trusting HQ.
 */
export async function pinStackService(client: HqClient, me: UserBundle, o: {track: Track; service: string; version: string; confirm: boolean}): Promise<StackPinResult> {
  const {compareVersions, parseVersion} = await import('../shared/manifest.js')
  try {
    parseVersion(o.version)
  } catch (err) {
    throw usageError('VERSION_INVALID', (err as JilError).message, 'versions look like v95.3')
  }
  const before = await client.stack(o.track)
  const from = before.versions[o.service] ?? null
  const lower = from !== null && compareVersions(o.version, from.version) < 0
  if (lower && !o.confirm) {
    throw new JilError('ROLLBACK_NOT_CONFIRMED', `${o.service} on ${o.track} runs ${from.version}; ${o.version} is lower`, {
      hint: `to roll back, pass --rollback: your key signs the rollback (ops-lead or admin): jil hq stack pin --track ${o.track} ${o.service} ${o.version} --rollback`,
    })
  }
  const sign = async (): Promise<UserSignature> => rollbackSignature(client, me, before, o)
  let rollback = lower ? await sign() : undefined
  let after: StackView
  try {
    after = await client.pinStack(o.track, {service: o.service, version: o.version, ...(rollback ? {rollback} : {})})
  } catch (err) {
    // The current pin may be hidden from the view (its manifest was withdrawn): HQ still knows it.
    if (!(err instanceof JilError && err.code === 'ROLLBACK_SIGNATURE_REQUIRED' && o.confirm && !rollback)) throw err
    rollback = await sign()
    after = await client.pinStack(o.track, {service: o.service, version: o.version, rollback})
  }
  const pinned = after.versions[o.service]
  if (!pinned) throw new JilError('PIN_NOT_APPLIED', `HQ did not report ${o.service} as pinned on ${o.track}`, {hint: `check with jil hq stack show --track ${o.track}`})
  return {track: o.track, service: o.service, version: pinned.version, digest: pinned.digest, from: from?.version ?? null, rollback: rollback !== undefined}
}

async function rollbackSignature(client: HqClient, me: UserBundle, view: StackView, o: {track: Track; service: string; version: string}): Promise<UserSignature> {
  const spec = view.stack?.spec.services.find((s) => s.name === o.service)
  if (!spec) throw new JilError('SERVICE_UNKNOWN', `${o.track}'s stack has no service ${o.service}`, {hint: `see jil hq stack show --track ${o.track}`})
  const {compareVersions} = await import('../shared/manifest.js')
  const {images} = await client.request<{images: (ImageListRow & {created_at: string})[]}>('GET', `/v1/images?track=${o.track}`)
  const target = images
    .filter((i) => i.image === spec.image && !i.deprecated && compareVersions(i.version, o.version) === 0)
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at))[0]
  if (!target) {
    throw new JilError('NOT_ON_TRACK', `${spec.image} ${o.version} has no live signed manifest on ${o.track}`, {hint: `jil hq images --track ${o.track} lists what is there`})
  }
  const [{rollbackPayload}, {signAsUser}] = await Promise.all([import('../shared/stack.js'), import('../shared/user-signature.js')])
  return signAsUser(rollbackPayload(o.track, o.service, spec.image, target.digest, target.version), me)
}

/** The services of a track's stack with the version each runs there, for `stack show`. */
export function stackRows(v: StackView): {service: string; image: string; version: string | null; digest: string | null; critical: string; pinned_by: string | null}[] {
  return (v.stack?.spec.services ?? []).map((s) => {
    const r = v.versions[s.name]
    return {service: s.name, image: s.image, version: r?.version ?? null, digest: r ? r.digest.slice(0, 19) : null, critical: s.critical ? 'yes' : 'no', pinned_by: r?.pinned_by ?? null}
  })
}

/** `12s`, `4m`, `3h`, `2d`, or `never`: the age of a node's last heartbeat. */
export function heartbeatAge(seconds: number | null): string {
  if (seconds === null) return 'never'
  if (seconds < 60) return `${Math.floor(seconds)}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`
  return `${Math.floor(seconds / 86_400)}d`
}

/** A node's running versions in one cell: `api=v1.2,db=v3` (services without a version are left out). */
export function versionsCell(n: FleetNode): string {
  const parts = Object.entries(n.versions)
    .filter(([, v]) => v !== null)
    .map(([s, v]) => `${s}=${v}`)
  return parts.length ? parts.join(',') : '-'
}
