import {Errors} from '@oclif/core'
import {describe, expect, it} from 'vitest'

import {toJilError} from '../../src/base-command.js'
import {keyValues, table} from '../../src/cli/table.js'
import {parseListen} from '../../src/hq/server.js'
import {JilError, systemCode, usageError} from '../../src/shared/errors.js'
import {redactUrl} from '../../src/shared/db/pg.js'

describe('errors', () => {
  it('keeps message and hint on one line each, with a stable code', () => {
    const e = new JilError('HQ_EXISTS', 'an HQ\n  already exists', {hint: 'use\n--force'})
    expect(e.message).toBe('an HQ already exists')
    expect(e.hint).toBe('use --force')
    expect(e.exit).toBe(1)
    expect(e.toJSON()).toEqual({code: 'HQ_EXISTS', message: 'an HQ already exists', hint: 'use --force'})
    expect(usageError('X', 'bad').exit).toBe(2)
  })

  it('maps oclif parse errors to usage (exit 2) and anything unexpected to INTERNAL (exit 1)', () => {
    const parse = Object.assign(new Errors.CLIError('Missing required flag data-dir\nSee more help with --help'), {parse: {}})
    expect(toJilError(parse)).toMatchObject({code: 'USAGE', exit: 2, message: 'Missing required flag data-dir'})
    expect(toJilError(new TypeError('x is undefined'))).toMatchObject({code: 'INTERNAL', exit: 1})
    const typed = new JilError('DB_UNREACHABLE', 'down')
    expect(toJilError(typed)).toBe(typed)
  })

  it('finds system error codes through causes and aggregate errors', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED'), {code: 'ECONNREFUSED'})
    expect(systemCode(new Error('wrapped', {cause: refused}))).toBe('ECONNREFUSED')
    expect(systemCode(new AggregateError([refused]))).toBe('ECONNREFUSED')
    expect(systemCode(new Error('plain'))).toBeUndefined()
  })

  it('never prints a database password', () => {
    expect(redactUrl('postgres://jil:s3cret@db:5432/jil')).toBe('postgres://jil:***@db:5432/jil')
    expect(redactUrl('::')).not.toContain(':')
  })
})

describe('parseListen', () => {
  it('reads HOST:PORT and [v6]:PORT', () => {
    expect(parseListen('127.0.0.1:8443')).toEqual({host: '127.0.0.1', port: 8443})
    expect(parseListen('0.0.0.0:0')).toEqual({host: '0.0.0.0', port: 0})
    expect(parseListen('[::1]:9000')).toEqual({host: '::1', port: 9000})
  })
  it('refuses anything else as a usage error', () => {
    for (const bad of ['8443', 'host:', 'host:99999', ':1', '']) expect(() => parseListen(bad), bad).toThrow(expect.objectContaining({code: 'LISTEN_INVALID', exit: 2}))
  })
})

describe('tables', () => {
  it('aligns columns and shows missing values as -', () => {
    const out = table(
      [
        {id: 'CH-ZUG-01', zone: 'CH/FINMA', version: 'v95.3'},
        {id: 'SG-MAS-01', zone: 'SG/MAS', version: null},
      ],
      [
        {key: 'id', header: 'node'},
        {key: 'zone', header: 'zone'},
        {key: 'version', header: 'version'},
      ],
    )
    expect(out.split('\n')).toEqual(['NODE       ZONE      VERSION', 'CH-ZUG-01  CH/FINMA  v95.3', 'SG-MAS-01  SG/MAS    -'])
    expect(keyValues([['a', 1], ['long', undefined]])).toBe('a     1\nlong  -')
  })
})
