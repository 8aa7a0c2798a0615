import {readFile} from 'node:fs/promises'

import {describe, expect, it} from 'vitest'

import {newKeyAndCsr, parseCsr} from '../../src/shared/csr.js'

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url), 'utf8')

describe('certificate signing requests', () => {
  it('parse back with their CN, SAN URI and P-256 key', async () => {
    const {csrPem} = await newKeyAndCsr('CH-ZUG-01', 'jil://node/CH-ZUG-01')
    const csr = await parseCsr(csrPem)
    expect(csr.commonName).toBe('CH-ZUG-01')
    expect(csr.sanUris).toEqual(['jil://node/CH-ZUG-01'])
  })

  it('refuse keys other than P-256 with CSR_INVALID, never a crash (made by openssl: secp256k1, Ed448, RSA)', async () => {
    for (const f of ['csr-secp256k1.pem', 'csr-ed448.pem', 'csr-rsa.pem']) {
      await expect(parseCsr(await fixture(f)), f).rejects.toMatchObject({code: 'CSR_INVALID', status: 400})
    }
    await expect(parseCsr('garbage')).rejects.toMatchObject({code: 'CSR_INVALID'})
  })
})
