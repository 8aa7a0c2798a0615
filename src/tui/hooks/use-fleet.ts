import {useEffect, useRef, useState} from 'react'

import type {FleetSource} from '../source.js'
import {FeedLoop, initialFeed, type Feed, type FeedOptions} from './feed.js'

export type {Feed, FeedOptions, FeedPhase} from './feed.js'

/**
 * The live fleet from a source: subscribes on mount, loads the snapshot after `ready`, applies
 * events, reconnects with backoff and says when it is stale. Re-renders at most once per
 * `throttleMs` (default 100 ms). Options are read when the source is first seen.
 */
export function useFleet(source: FleetSource, options: FeedOptions = {}): Feed {
  const [feed, setFeed] = useState<Feed>(initialFeed)
  const opts = useRef(options)
  useEffect(() => {
    const loop = new FeedLoop(source, setFeed, opts.current)
    void loop.run()
    return () => loop.stop()
  }, [source])
  return feed
}
