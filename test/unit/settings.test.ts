import {describe, expect, it} from 'vitest'

import {JilError} from '../../src/shared/errors.js'
import {parseDuration, settingsFrom} from '../../src/node/settings.js'

const code = (fn: () => unknown) => {
  try {
    fn()
  } catch (err) {
    return err instanceof JilError ? `${err.code}/${err.exit}` : 'other'
  }
  return 'ok'
}

describe('node settings', () => {
  it('defaults to the seed schedules and DESIGN.md paths', () => {
    const s = settingsFrom('/var/lib/jil', {})
    expect(s.schedule).toEqual({healthMs: 60_000, securityMs: 6 * 3_600_000, updateMs: 4 * 3_600_000, maintenanceAtUtc: {hour: 2, minute: 0}})
    expect(s.healthzListen).toEqual({host: '127.0.0.1', port: 9464})
    expect(s.logDir).toBe('/var/lib/jil/log')
    expect(s.logMaxBytes).toBe(100 * 1024 * 1024)
    expect(s.tempMaxAgeMs).toBe(7 * 86_400_000)
    expect(s.portAllowlist).toEqual([22, 443, 9464])
    expect(s.dockerHost).toBeUndefined()
  })

  it('takes JIL_* values and DOCKER_HOST, JIL_DOCKER_HOST first', () => {
    const s = settingsFrom('/s', {JIL_HEALTH_EVERY: '15s', JIL_MAINTENANCE_AT: '03:30', JIL_TEMP_DIRS: '/tmp/a:/tmp/b', JIL_PORT_ALLOWLIST: '443, 22,443', DOCKER_HOST: 'unix:///d.sock', JIL_COMETBFT_URL: 'http://127.0.0.1:26657'})
    expect(s.schedule.healthMs).toBe(15_000)
    expect(s.schedule.maintenanceAtUtc).toEqual({hour: 3, minute: 30})
    expect(s.tempDirs).toEqual(['/tmp/a', '/tmp/b'])
    expect(s.portAllowlist).toEqual([22, 443])
    expect(s.dockerHost).toBe('unix:///d.sock')
    expect(settingsFrom('/s', {DOCKER_HOST: 'unix:///d.sock', JIL_DOCKER_HOST: 'unix:///j.sock'}).dockerHost).toBe('unix:///j.sock')
  })

  it('refuses bad values as usage errors naming the variable', () => {
    expect(code(() => settingsFrom('/s', {JIL_HEALTH_EVERY: 'often'}))).toBe('DURATION_INVALID/2')
    // A zero interval would spin; zero jitter is fine.
    expect(code(() => settingsFrom('/s', {JIL_HEALTH_EVERY: '0s'}))).toBe('DURATION_INVALID/2')
    expect(code(() => settingsFrom('/s', {JIL_HEALTH_EVERY: '0.1ms'}))).toBe('DURATION_INVALID/2')
    expect(settingsFrom('/s', {JIL_JITTER: '0s'}).jitterMs).toBe(0)
    expect(code(() => settingsFrom('/s', {JIL_MAINTENANCE_AT: '25:00'}))).toBe('SETTING_INVALID/2')
    expect(code(() => settingsFrom('/s', {JIL_HEALTHZ_LISTEN: 'localhost'}))).toBe('LISTEN_INVALID/2')
    expect(code(() => settingsFrom('/s', {JIL_PORT_ALLOWLIST: '22,70000'}))).toBe('SETTING_INVALID/2')
    expect(parseDuration('250ms', 'x')).toBe(250)
    expect(parseDuration('1.5h', 'x')).toBe(5_400_000)
  })
})
