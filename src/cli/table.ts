/** A plain text table for human output (stdout). Columns size to their widest cell. */
export function table(rows: readonly Record<string, unknown>[], columns: readonly {key: string; header: string}[]): string {
  const cells = rows.map((r) => columns.map((c) => cell(r[c.key])))
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)))
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(columns.map((c) => c.header.toUpperCase())), ...cells.map(line)].join('\n')
}

/** Key/value lines, aligned: for single-object results. */
export function keyValues(pairs: readonly [string, unknown][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(w)}  ${cell(v)}`).join('\n')
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '-'
  if (v instanceof Date) return v.toISOString()
  if (Array.isArray(v)) return v.map(cell).join(',')
  return String(v)
}
