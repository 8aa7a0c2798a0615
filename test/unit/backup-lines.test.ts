import {describe, expect, it} from 'vitest'

import {MemberLines} from '../../src/hq/backup/format.js'

const ROWS = ['{"name":"Zürich Kantonalbank"}', '{"fee":"0.5 €","note":"日本"}', '{"emoji":"🛰"}']
const MEMBER = Buffer.from(ROWS.map((r) => r + '\n').join(''))

function linesOf(frames: Buffer[]): {lines: string[]; rest: string} {
  const m = new MemberLines()
  const lines = frames.flatMap((f) => m.push(f))
  return {lines, rest: m.rest()}
}

describe('a table member read back from data frames cut at any byte', () => {
  it('gives back every row whole, wherever one cut falls (inside a line, inside a 2-, 3- or 4-byte character)', () => {
    for (let cut = 0; cut <= MEMBER.length; cut++) {
      expect(linesOf([MEMBER.subarray(0, cut), MEMBER.subarray(cut)]), `cut at ${cut}`).toEqual({lines: ROWS, rest: ''})
    }
  })

  it('gives back every row whole from one-byte frames', () => {
    expect(linesOf([...MEMBER].map((b) => Buffer.of(b)))).toEqual({lines: ROWS, rest: ''})
  })

  it('leaves a rest when the member ends inside a row or inside a character', () => {
    expect(linesOf([MEMBER.subarray(0, MEMBER.length - 3)]).rest).not.toBe('')
    const inChar = MEMBER.indexOf(Buffer.from('€')) + 1
    expect(linesOf([MEMBER.subarray(0, inChar)]).rest).not.toBe('')
  })
})
