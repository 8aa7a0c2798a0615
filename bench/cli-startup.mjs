// Cold start of the built CLI (`npm run build` first): wall time of a fresh `node bin/run.js ...`
// process for `--version`, `hq --help` and `hq whoami --help`, against bare `node -e 0`, runs
// interleaved so drift in machine load hits every case alike. Then, in separate traced runs, which
// modules each path loads: none of the heavy dependencies may be among them.
//
//   npm run bench -- cli-startup [--runs N] [--warmup N]
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {spawnSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

const BENCH = 'cli-startup'
const root = fileURLToPath(new URL('..', import.meta.url))
const bin = join(root, 'bin/run.js')
const argv = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? Number(argv[i + 1]) : dflt
}
const RUNS = opt('runs', 20)
const WARMUP = opt('warmup', 2)

/** Packages that must never load on the three measured paths. */
const HEAVY = ['pg', 'fastify', 'undici', 'ink', 'react', 'kafkajs', 'dockerode', '@peculiar/x509', '@electric-sql/pglite', 'pino', 'systeminformation', 'prom-client']

const cases = [
  {name: 'node -e 0', args: ['-e', '0'], bare: true},
  {name: 'jil --version', args: [bin, '--version']},
  {name: 'jil hq --help', args: [bin, 'hq', '--help']},
  {name: 'jil hq whoami --help', args: [bin, 'hq', 'whoami', '--help']},
]

const emit = (metric, value, unit) => process.stdout.write(JSON.stringify({bench: BENCH, metric, value, unit}) + '\n')
const round = (x) => Math.round(x * 10) / 10

// An empty HOME/XDG dirs would change what oclif reads; keep the user's, but never a debug env.
const env = {...process.env}
delete env.DEBUG
delete env.NODE_OPTIONS

function runOnce(c, extraArgs = [], extraEnv = {}) {
  const t0 = process.hrtime.bigint()
  const r = spawnSync(process.execPath, [...extraArgs, ...c.args], {cwd: root, env: {...env, ...extraEnv}, encoding: 'utf8'})
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  if (r.error) throw r.error
  if (r.status !== 0 || (!c.bare && r.stdout.trim() === '')) {
    throw new Error(`${c.name} exited ${r.status}: ${r.stderr.trim() || '(no stderr)'}`)
  }
  return ms
}

function quantile(sorted, q) {
  // Nearest-rank: the value below which q of the samples fall.
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}
const median = (sorted) => (sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2)

if (!existsSync(join(root, 'oclif.manifest.json'))) {
  process.stderr.write('warning: no oclif.manifest.json: run `npm run build` first; figures will not be representative\n')
}

// Timing.
process.stderr.write(`${BENCH}: ${WARMUP} warm-up + ${RUNS} runs of each of ${cases.length} cases, interleaved\n`)
const samples = new Map(cases.map((c) => [c.name, []]))
for (let i = 0; i < WARMUP + RUNS; i++) {
  for (const c of cases) {
    const ms = runOnce(c)
    if (i >= WARMUP) samples.get(c.name).push(ms)
  }
}
const stats = new Map()
for (const c of cases) {
  const s = samples.get(c.name).sort((a, b) => a - b)
  stats.set(c.name, {median: median(s), p90: quantile(s, 0.9), min: s[0]})
}
const bare = stats.get('node -e 0')
for (const c of cases) {
  const s = stats.get(c.name)
  emit(`${c.name} median`, round(s.median), 'ms')
  emit(`${c.name} p90`, round(s.p90), 'ms')
  if (!c.bare) emit(`${c.name} overhead median`, round(s.median - bare.median), 'ms')
}
const worst = Math.max(...cases.filter((c) => !c.bare).map((c) => stats.get(c.name).median - bare.median))
emit('worst overhead median (goal <= 150)', round(worst), 'ms')

// Which modules load: a separate traced run per case (the tracing hook costs time of its own).
const trace = join(root, 'bench/lib/trace-modules.mjs')
const dir = mkdtempSync(join(tmpdir(), 'jil-bench-'))
try {
  let heavyTotal = 0
  for (const c of cases.filter((c) => !c.bare)) {
    const file = join(dir, `${c.name.replace(/\W+/g, '_')}.txt`)
    runOnce(c, ['--import', trace], {JIL_BENCH_TRACE: file})
    const lines = [...new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean))]
    const files = new Set(lines.map((l) => l.slice(4).replace(/^file:\/\//, '')))
    const packages = new Set()
    for (const f of files) {
      const m = /.*\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)
      if (m) packages.add(m[1])
    }
    const heavy = HEAVY.filter((p) => packages.has(p))
    heavyTotal += heavy.length
    emit(`${c.name} module files loaded`, files.size, 'files')
    emit(`${c.name} packages loaded from node_modules`, packages.size, 'packages')
    emit(`${c.name} heavy modules loaded`, heavy.length, 'modules')
    if (heavy.length) process.stderr.write(`${c.name} loads heavy modules: ${heavy.join(', ')}\n`)
    if (process.env.JIL_BENCH_VERBOSE) process.stderr.write(`${c.name} loads packages: ${[...packages].sort().join(', ') || '(none)'}\n`)
  }
  emit('heavy modules loaded on these paths', heavyTotal, 'modules')
} finally {
  rmSync(dir, {recursive: true, force: true})
}
