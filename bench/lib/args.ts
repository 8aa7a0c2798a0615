/** `--NAME N` from a bench's command line: a positive integer, `dflt` when the option is not given. */
export function opt(name: string, dflt: number, argv: readonly string[] = process.argv.slice(2)): number {
  const i = argv.indexOf(`--${name}`)
  const v = i >= 0 ? Number(argv[i + 1]) : dflt
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} wants a positive integer`)
  return v
}
