import {useEffect, useState} from 'react'

import type {Clock} from '../../shared/clock.js'

/** The time, re-read every `everyMs` (heartbeat ages and cert days move on with no event): one interval, owned by the component. */
export function useNow(clock: Clock, everyMs = 1000): Date {
  const [now, setNow] = useState(() => clock.now())
  useEffect(() => {
    const t = setInterval(() => setNow(clock.now()), everyMs)
    return () => clearInterval(t)
  }, [clock, everyMs])
  return now
}
