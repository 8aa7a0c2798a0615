import type {AdvisoryLock, Db} from './types.js'

/**
 * Which HQ replica runs a background loop (DESIGN.md §7): the one holding the loop's advisory lock.
 * The lock is taken when free and then held across passes; work under it goes on the lock's own
 * session (`lock.transaction`), so that if the session dies the work dies with it. After a failure
 * the loop lets go, and this replica or another takes over afresh.
 */
export class Leadership {
  private lock: AdvisoryLock | null = null

  constructor(
    private readonly db: Db,
    private readonly key: bigint,
  ) {}

  /** The lock, taken now if it is free; null while another replica leads. */
  async acquire(): Promise<AdvisoryLock | null> {
    this.lock ??= await this.db.tryAdvisoryLock(this.key)
    return this.lock
  }

  /** Whether this replica leads now. */
  get held(): boolean {
    return this.lock !== null
  }

  /** Lets go: after a failure (the session may be what failed), or when the loop stops. */
  async release(): Promise<void> {
    const lock = this.lock
    this.lock = null
    await lock?.release().catch(() => {})
  }
}
