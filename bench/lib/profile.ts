// JIL_BENCH_PROFILE=FILE: a V8 CPU profile of the measured part of a bench only (node --cpu-prof
// would also profile the setup, which often costs more than what is measured). Open it in Chrome's
// DevTools (Performance → Load profile) or any .cpuprofile viewer.
import {writeFileSync} from 'node:fs'
import {Session} from 'node:inspector/promises'

export type Profiler = {stop(): Promise<void>}

export async function startProfile(): Promise<Profiler> {
  const file = process.env.JIL_BENCH_PROFILE
  if (!file) return {stop: async () => {}}
  const s = new Session()
  s.connect()
  await s.post('Profiler.enable')
  await s.post('Profiler.setSamplingInterval', {interval: 200})
  await s.post('Profiler.start')
  return {
    stop: async () => {
      const {profile} = await s.post('Profiler.stop')
      writeFileSync(file, JSON.stringify(profile))
      s.disconnect()
      process.stderr.write(`profile: ${file}\n`)
    },
  }
}
