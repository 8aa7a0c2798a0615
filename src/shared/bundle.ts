import {homedir} from 'node:os'
import {join} from 'node:path'

import {JilError} from './errors.js'
import {readSecret, writeSecret} from './files.js'
import {isRole, type Role} from './pki.js'

/**
 * A user bundle: everything a user needs to talk to HQ in one 0600 file — client cert and key,
 * HQ's CA, HQ's URL. `jil hq init` writes the first admin's; `jil hq user add` the others'.
 */
export type UserBundle = {
  jil_bundle: 1
  kind: 'user'
  name: string
  role: Role
  hq_url: string
  ca_fingerprint: string
  cert: string
  key: string
  ca: string
  /** HQ's audit checkpoint public key (SPKI PEM), pinned so `jil audit verify` never takes HQ's word. */
  checkpoint_key?: string
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'jil')
}

/** The CLI's default profile: the bundle used when neither --user nor JIL_USER is given. */
export function defaultProfilePath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'profile.json')
}

export async function writeBundle(path: string, bundle: UserBundle): Promise<void> {
  await writeSecret(path, JSON.stringify(bundle, null, 2) + '\n')
}

export async function readBundle(path: string): Promise<UserBundle> {
  const text = await readSecret(path, 'user bundle')
  let b: Partial<UserBundle>
  try {
    b = JSON.parse(text) as Partial<UserBundle>
  } catch {
    throw new JilError('BUNDLE_INVALID', `user bundle ${path} is not JSON`, {hint: 'use the file written by jil hq init or jil hq user add'})
  }
  const ok =
    b.jil_bundle === 1 &&
    b.kind === 'user' &&
    typeof b.name === 'string' &&
    typeof b.role === 'string' &&
    isRole(b.role) &&
    typeof b.hq_url === 'string' &&
    typeof b.cert === 'string' &&
    typeof b.key === 'string' &&
    typeof b.ca === 'string'
  if (!ok) throw new JilError('BUNDLE_INVALID', `user bundle ${path} is missing fields`, {hint: 'use the file written by jil hq init or jil hq user add'})
  return b as UserBundle
}

/** Which bundle to use: --user, else JIL_USER (oclif fills the flag from it), else the default profile. */
export async function loadUserBundle(path: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<{path: string; bundle: UserBundle}> {
  const p = path ?? defaultProfilePath(env)
  try {
    return {path: p, bundle: await readBundle(p)}
  } catch (err) {
    if (path === undefined && err instanceof JilError && err.code === 'FILE_MISSING') {
      throw new JilError('NO_PROFILE', `no user bundle given and no default profile at ${p}`, {
        hint: 'pass --user FILE (or JIL_USER), or run jil hq init, which writes the first admin profile',
      })
    }
    throw err
  }
}
