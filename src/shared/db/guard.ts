import {AsyncLocalStorage} from 'node:async_hooks'

import {JilError} from '../errors.js'
import type {Queryable, QueryResult, Row} from './types.js'


/**
 * Enforces "the transaction handle is the only usable handle": while a transaction callback runs,
 * the outer Db refuses queries coming from inside it, and a transaction handle refuses use after the
 * transaction ended. Other concurrent callers (other requests) are unaffected.
 */
export class TxGuard {
  private readonly als = new AsyncLocalStorage<object>()

  /** Throws when called from inside a transaction callback of this database. */
  assertOutside(): void {
    if (this.als.getStore() !== undefined) {
      throw new JilError('DB_OUTER_HANDLE_IN_TX', 'the outer database handle was used inside a transaction', {
        hint: 'use the tx handle passed to transaction(fn)',
        status: 500,
      })
    }
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.als.run({}, fn)
  }

  /** Runs fn outside every transaction's context (a notification delivered while a transaction's query ran is not part of it). */
  exit<T>(fn: () => T): T {
    return this.als.exit(fn)
  }
}

/** Wraps a transaction-scoped Queryable so it refuses use once the transaction has ended. */
export function scopedHandle(inner: Queryable): {handle: Queryable; end: () => void} {
  let open = true
  const check = () => {
    if (!open) {
      throw new JilError('DB_TX_ENDED', 'a transaction handle was used after its transaction ended', {status: 500})
    }
  }
  const handle: Queryable = {
    async query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
      check()
      return inner.query<R>(sql, params)
    },
    async exec(sql: string): Promise<void> {
      check()
      return inner.exec(sql)
    },
  }
  return {handle, end: () => void (open = false)}
}

/** A LISTEN/NOTIFY channel: a plain lower-case identifier, so it needs no quoting and reads the same on both adapters. */
export function assertChannel(channel: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new RangeError(`not a notification channel name: ${JSON.stringify(channel)}`)
}

export function lockKey(key: bigint | number): bigint {
  const k = BigInt(key)
  if (k < -(2n ** 63n) || k >= 2n ** 63n) throw new RangeError(`advisory lock key out of range: ${k}`)
  return k
}

/** What both adapters share: the outer handle's queries, refused from inside a transaction callback. */
export abstract class GuardedQueries implements Queryable {
  protected readonly guard = new TxGuard()
  protected abstract readonly direct: Queryable

  async query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    this.guard.assertOutside()
    return this.direct.query<R>(sql, params)
  }

  async exec(sql: string): Promise<void> {
    this.guard.assertOutside()
    return this.direct.exec(sql)
  }
}
