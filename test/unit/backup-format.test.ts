import {createHash} from 'node:crypto'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {MAGIC, MemberLines, openArchive} from '../../src/hq/backup/format.js'

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

describe('an archive whose header is not one jil wrote', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jil-backup-format-'))
  })
  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  /** A file with the magic and a header of this JSON text whose checksum holds (what anyone can write). */
  async function withHeader(name: string, json: string): Promise<string> {
    const body = Buffer.from(json)
    const len = Buffer.alloc(4)
    len.writeUInt32BE(body.length)
    const path = join(dir, name)
    await writeFile(path, Buffer.concat([MAGIC, len, body, createHash('sha256').update(body).digest()]))
    return path
  }

  it('refuses a header that is JSON but not an object as damaged, not as a bug', async () => {
    for (const json of ['null', '[]', '7', '{"format":1,"compression":"gzip","encryption":5}']) {
      await expect(openArchive(await withHeader('odd.jilbak', json), 'pass'), json).rejects.toMatchObject({code: 'BACKUP_CORRUPT'})
    }
  })

  it('refuses scrypt settings beyond what jil writes before deriving anything', async () => {
    const header = (n: number, r: number, p: number) =>
      JSON.stringify({format: 1, compression: 'gzip', encryption: {kdf: 'scrypt', n, r, p, salt: 'c2FsdA==', cipher: 'aes-256-gcm', chunk_bytes: 65536}})
    for (const [n, r, p] of [[2 ** 20, 8, 1], [2 ** 17, 16, 1], [2 ** 17, 8, 4]] as const) {
      await expect(openArchive(await withHeader('kdf.jilbak', header(n, r, p)), 'pass')).rejects.toMatchObject({code: 'BACKUP_FORMAT_UNSUPPORTED'})
    }
  })

  it('says what is wrong with a path that is no archive file', async () => {
    await expect(openArchive(dir, undefined)).rejects.toMatchObject({code: 'FILE_INVALID'})
    await expect(openArchive(join(dir, 'gone.jilbak'), undefined)).rejects.toMatchObject({code: 'FILE_MISSING'})
  })
})
