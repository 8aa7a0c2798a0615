import type {UserBundle} from '../shared/bundle.js'
import {JilError} from '../shared/errors.js'
import type {HqClient} from '../shared/hq-client.js'
import {approvalPayload, type ImageManifest} from '../shared/manifest.js'
import {signAsUser} from '../shared/user-signature.js'

/** IMAGE@sha256:DIGEST (any registry/name before the @) → its image name and digest. */
export function parseImageAtDigest(ref: string): {image: string; digest: string} {
  const m = /^(?:[^/@]+\/)?([a-z0-9][a-z0-9._/-]*)@(sha256:[0-9a-f]{64})$/.exec(ref)
  if (!m) throw new JilError('IMAGE_REF_INVALID', `${JSON.stringify(ref)} is not IMAGE@sha256:DIGEST`, {exit: 2, hint: 'e.g. registry.example.com/jil/wallet-api@sha256:… (jil hq images lists digests)'})
  const full = ref.slice(0, ref.indexOf('@'))
  // With a registry host in front (a dot, a colon or localhost in the first part), the image is the rest.
  const first = full.split('/')[0] ?? ''
  const image = first.includes('.') || first.includes(':') || first === 'localhost' ? full.slice(first.length + 1) : full
  return {image, digest: m[2]!}
}

export type ApproveResult = {digest: string; track: string; approvers: string[]}

/** The approval is signed here, with the approver's own key; HQ only keeps and checks it. */
export async function approveRelease(client: HqClient, me: UserBundle, ref: string, track: 'testnet' | 'mainnet'): Promise<ApproveResult> {
  const {image, digest} = parseImageAtDigest(ref)
  const approval = signAsUser(approvalPayload({image, digest, track}, track), me)
  return client.request<ApproveResult>('POST', `/v1/images/${digest}/approvals`, {track, approval})
}

export type ImageListRow = {image: string; version: string; digest: string; track: string; approvals: number; approvers: string[]; signed_by: string; pushed_by: string; deprecated: {reason: string} | null}

export function shortDigest(d: string): string {
  return d.slice(0, 7 + 12)
}

export type {ImageManifest}
