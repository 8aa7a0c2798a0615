/**
 * Worker thread for `jil audit verify`: parses and hashes batches of export lines (entry hash and
 * RFC 6962 leaf hash, each against the entry's own claimed prev_hash), so the main thread keeps only
 * the sequential checks. Built as its own file (dist/workers/audit-hash.js).
 */
import {parentPort} from 'node:worker_threads'

import type {AuditEntry} from '../shared/audit.js'
import {hashEntry} from '../shared/audit-verify.js'

export type HashBatchRequest = {id: number; firstLine: number; lines: string[]}
export type HashBatchResult = {
  id: number
  seqs: Float64Array
  prev: string[]
  hash: string[]
  computed: string[]
  leaves: Uint8Array
  error?: {line: number; message: string}
}

parentPort?.on('message', (req: HashBatchRequest) => {
  const n = req.lines.length
  const out: HashBatchResult = {id: req.id, seqs: new Float64Array(n), prev: [], hash: [], computed: [], leaves: new Uint8Array(32 * n)}
  for (let i = 0; i < n; i++) {
    let rec: AuditEntry & {type?: string}
    try {
      rec = JSON.parse(req.lines[i]!) as typeof rec
    } catch {
      out.error = {line: req.firstLine + i, message: 'is not JSON'}
      break
    }
    if (rec.type !== 'entry') {
      out.error = {line: req.firstLine + i, message: `is a ${JSON.stringify(rec.type)} record among the entries`}
      break
    }
    try {
      const r = hashEntry(rec)
      out.seqs[i] = r.seq
      out.prev.push(r.prev_hash)
      out.hash.push(r.hash)
      out.computed.push(r.computed)
      out.leaves.set(r.leaf, 32 * i)
    } catch (err) {
      out.error = {line: req.firstLine + i, message: `is not a valid entry (${(err as Error).message})`}
      break
    }
  }
  parentPort!.postMessage(out, [out.seqs.buffer as ArrayBuffer, out.leaves.buffer as ArrayBuffer])
})
