import {useCallback, useEffect, useRef, useState, useSyncExternalStore} from 'react'

import type {FleetSource} from '../source.js'
import {FeedLoop, initialFeed, type Feed, type FeedOptions} from './feed.js'

export type {Feed, FeedOptions, FeedPhase} from './feed.js'

/**
 * The latest feed and who to tell when it changes: what components read the live fleet through,
 * each selecting the part it shows, so that an update re-renders only the components whose part
 * changed (ink redraws the whole screen on any commit; a heartbeat of a node off screen must cause none).
 */
export class FeedStore {
  private feed: Feed = initialFeed
  private readonly listeners = new Set<() => void>()

  readonly get = (): Feed => this.feed

  readonly subscribe = (onChange: () => void): (() => void) => {
    this.listeners.add(onChange)
    return () => {
      this.listeners.delete(onChange)
    }
  }

  set(feed: Feed): void {
    this.feed = feed
    for (const l of [...this.listeners]) l()
  }
}

/**
 * The live fleet from a source, as a store: subscribes on mount, loads the snapshot after `ready`,
 * applies events, reconnects with backoff and says when it is stale. The store changes at most once
 * per `throttleMs` (default 100 ms). Options are read when the source is first seen.
 */
export function useFeedStore(source: FleetSource, options: FeedOptions = {}): FeedStore {
  const [store] = useState(() => new FeedStore())
  const opts = useRef(options)
  useEffect(() => {
    const loop = new FeedLoop(source, (feed) => store.set(feed), opts.current)
    void loop.run()
    return () => loop.stop()
  }, [source, store])
  return store
}

/**
 * The part of the feed a component shows: it re-renders when `equal` says the selected part
 * changed, not on every update. `select` may change between renders (it is applied again then).
 */
export function useFeedSelector<T>(store: FeedStore, select: (feed: Feed) => T, equal: (a: T, b: T) => boolean = Object.is): T {
  const last = useRef<{feed: Feed; select: (feed: Feed) => T; value: T} | null>(null)
  const selectRef = useRef(select)
  selectRef.current = select
  const getSnapshot = useCallback(() => {
    const feed = store.get()
    const sel = selectRef.current
    const prev = last.current
    if (prev && prev.feed === feed && prev.select === sel) return prev.value
    const next = sel(feed)
    // Equal to what was selected before: keep that object, so React sees no change.
    const value = prev && equal(prev.value, next) ? prev.value : next
    last.current = {feed, select: sel, value}
    return value
  }, [store, equal])
  return useSyncExternalStore(store.subscribe, getSnapshot)
}

/** Objects equal field by field (Object.is): for selections made of several parts. */
export function shallowEqual<T extends Record<string, unknown>>(a: T, b: T): boolean {
  if (a === b) return true
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  return ka.every((k) => Object.is(a[k], b[k]))
}

/**
 * The whole live feed, re-rendering on every update (at most once per `throttleMs`): for small
 * consumers; `jil top` itself selects parts (useFeedStore + useFeedSelector).
 */
export function useFleet(source: FleetSource, options: FeedOptions = {}): Feed {
  const store = useFeedStore(source, options)
  return useSyncExternalStore(store.subscribe, store.get)
}
