// bench_engine.py's `sandbox-runtime` row: Anthropic's @anthropic-ai/sandbox-runtime (pinned in
// bench/package.json) on its documented library path. `initialize` once with an allow-list like the
// orchestrator's default (`workers.sandbox_network: allow`: one model API host, writes only in the
// worker's folder), then for each of JOBS no-op commands `wrapWithSandbox("true")` and `spawn` it
// with a shell, at most CONCURRENCY at once. Timed from the first wrap to the last exit (not the
// initialize); prints one JSON line: {"wall_s", "cpu_s" (this node process, every thread), "failed"}.
//
//   node bench/sandbox_runtime_noop.mjs JOBS CONCURRENCY FOLDER
import { spawn } from 'node:child_process'
import { SandboxManager } from '@anthropic-ai/sandbox-runtime'

const [jobs, concurrency] = process.argv.slice(2, 4).map(Number)
const folder = process.argv[4]
if (!(jobs >= 1) || !(concurrency >= 1) || !folder) {
  console.error('usage: node sandbox_runtime_noop.mjs JOBS CONCURRENCY FOLDER')
  process.exit(2)
}

await SandboxManager.initialize({
  network: { allowedDomains: ['api.anthropic.com'], deniedDomains: [] },
  filesystem: { denyRead: [], allowWrite: [folder], denyWrite: [] },
})

function one() {
  return SandboxManager.wrapWithSandbox('true').then(
    wrapped =>
      new Promise(resolve => {
        const child = spawn(wrapped, { shell: true, cwd: folder, stdio: 'ignore' })
        child.on('error', () => resolve(1))
        child.on('exit', code => resolve(code === 0 ? 0 : 1))
      }),
  )
}

const cpu = process.cpuUsage()
const start = process.hrtime.bigint()
let next = 0
let failed = 0
async function lane() {
  while (next < jobs) {
    next += 1
    failed += await one()
  }
}
await Promise.all(Array.from({ length: Math.min(concurrency, jobs) }, lane))
const wall = Number(process.hrtime.bigint() - start) / 1e9
const used = process.cpuUsage(cpu)
console.log(JSON.stringify({ wall_s: wall, cpu_s: (used.user + used.system) / 1e6, failed }))
await SandboxManager.reset()
process.exit(0)
