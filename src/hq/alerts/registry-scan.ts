import type {Clock} from '../../shared/clock.js'
import type {RegistryClient} from '../registry/oci.js'
import type {AlertMetrics} from './metrics.js'
import type {RegistryDigest} from './rules.js'

/** The registry walk is heavy (a HEAD per tag): by default at most once every 10 minutes. */
export const REGISTRY_SCAN_MS = 10 * 60_000

export type RegistryScanOptions = {
  /** At most one walk per this long (default 10 min), counted from the start of the previous one. */
  everyMs?: number
  metrics?: AlertMetrics
  /** A walk failed; the previous result stays in use. */
  onError?: (err: unknown) => void
}

/** The last completed walk: every (repository, digest) the registry holds, with its tags. */
export type RegistryInventory = {at: Date; digests: readonly RegistryDigest[]}

/**
 * The registry side of the image-unsigned rule (issue 8: "a registry digest … without a valid
 * signed manifest"). Walking the registry takes a request per tag, far longer than an evaluation
 * should, so the evaluator never waits for it: `current()` hands out the last completed walk and
 * starts the next one in the background once it is due. Single-flight; a failed walk keeps the
 * previous result, so alerts are not resolved because the registry is unreachable. What is signed is
 * not decided here: the evaluation compares these digests with the manifests it loads, so a digest
 * signed after the walk clears at the next evaluation.
 */
export class RegistryScan {
  private last: RegistryInventory | null = null
  private startedAt: number | null = null
  private running: Promise<void> | undefined
  private abort: AbortController | undefined
  private stopped = false

  constructor(
    /** The registry (HOST:PORT) whose digests are walked; repositories are reported as HOST:PORT/NAME, as manifests name them. */
    readonly registry: string,
    private readonly client: () => Promise<Pick<RegistryClient, 'inventory'>>,
    private readonly clock: Clock,
    private readonly o: RegistryScanOptions = {},
  ) {}

  /** The last completed walk (null: none yet); starts a walk in the background when one is due, never waiting for it. */
  current(): RegistryInventory | null {
    if (!this.running && !this.stopped && (this.startedAt === null || this.clock.now().getTime() - this.startedAt >= (this.o.everyMs ?? REGISTRY_SCAN_MS))) {
      void this.refresh()
    }
    return this.last
  }

  /** Walks now, or joins the walk in flight; resolves when it ends, whatever its outcome (failures go to onError). */
  refresh(): Promise<void> {
    if (this.stopped) return Promise.resolve()
    this.running ??= this.walk().finally(() => {
      this.running = undefined
      this.abort = undefined
    })
    return this.running
  }

  /** Resolves when the walk in flight (if any) ends; never starts one. What follows an evaluation that may have started a walk. */
  settled(): Promise<void> {
    return this.running ?? Promise.resolve()
  }

  /** Cuts the walk in flight short and waits for it; no walk starts after this. */
  async stop(): Promise<void> {
    this.stopped = true
    this.abort?.abort()
    await this.running
  }

  private async walk(): Promise<void> {
    const started = this.clock.now()
    this.startedAt = started.getTime()
    const abort = (this.abort = new AbortController())
    try {
      const inventory = await (await this.client()).inventory(abort.signal)
      const byDigest = new Map<string, RegistryDigest>()
      for (const i of inventory) {
        const repository = `${this.registry}/${i.repository}`
        const key = `${repository}@${i.digest}`
        const seen = byDigest.get(key)
        if (seen) seen.tags.push(i.tag)
        else byDigest.set(key, {repository, tags: [i.tag], digest: i.digest})
      }
      for (const d of byDigest.values()) d.tags.sort()
      this.last = {at: started, digests: [...byDigest.values()]}
      this.o.metrics?.registryScans.inc({outcome: 'ok'})
    } catch (err) {
      // Cut short by stop(): not a failure of the registry.
      if (abort.signal.aborted) return
      this.o.metrics?.registryScans.inc({outcome: 'failed'})
      this.o.onError?.(err)
    }
  }
}
