import {useEffect, useState} from 'react'

import type {Clock} from '../../shared/clock.js'

/** The time, re-read every `everyMs` (heartbeat ages and cert days move on with no event): one interval, owned by the component. */
export function useNow(clock: Clock, everyMs = 1000): Date {
  const [now, setNow] = useState(() => clock.now())
  useEffect(() => {
    // The same time (a stopped or manual clock) keeps the same Date: nothing re-renders.
    const t = setInterval(() => {
      const next = clock.now()
      setNow((prev) => (prev.getTime() === next.getTime() ? prev : next))
    }, everyMs)
    return () => clearInterval(t)
  }, [clock, everyMs])
  return now
}
