// Runs per second from Node (for BENCHMARKS.md; not part of the tests):
//   run(['/bin/busybox', 'true']) with 1 and 8 in flight, beside
//   child_process.execFile of the same binary; and a warm pooled run
//   (a snapshot of busybox at its entry) from Node.
//   node bench.mjs [seconds per case, default 3]
// The binding's overhead: the same pooled runs from Rust
// (examples/pool_rate.rs, built here with cargo) and from Node, three
// rounds interleaved, medians per call and the calling thread's CPU time
// per call (which load on the machine disturbs less than wall time).
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

import { run, Sandbox, SandboxPool } from './index.js';

const seconds = Number(process.argv[2] ?? 3);
const execFileP = promisify(execFile);

async function rate(name, inFlight, once) {
  for (let i = 0; i < 20; i++) await once(); // warm up
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (performance.now() < end) {
      await once();
      n += 1;
    }
  }));
  const perSec = n / ((performance.now() - start) / 1000);
  console.log(`${name.padEnd(44)} ${inFlight} in flight: ${perSec.toFixed(0).padStart(7)} runs/s  (${(1e6 / perSec).toFixed(0)} µs each)`);
  return perSec;
}

const args = ['/bin/busybox', 'true'];
for (const inFlight of [1, 8]) {
  const hv = await rate('hvsandbox run()', inFlight, () => run(args));
  const cp = await rate('child_process.execFile', inFlight, () => execFileP(args[0], args.slice(1)));
  console.log(`  ratio hvsandbox/execFile: ${(hv / cp).toFixed(2)}`);
}
const sb = new Sandbox();
const snap = await sb.snapshot(args, { at: 'entry' });
await sb.close();
const pool = new SandboxPool(snap, { size: 8 });
for (const inFlight of [1, 8]) await rate('warm pooled run (SandboxPool.run)', inFlight, () => pool.run(['true']));
const loan = await pool.acquire();
await rate('one pooled sandbox, runs back to back', 1, () => loan.run(['true']));

// Node beside Rust, one call in flight.
const mainCpuUs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
async function perCall(once) {
  for (let i = 0; i < 20; i++) await once();
  const times = [];
  const cpu = mainCpuUs();
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const start = performance.now();
    await once();
    times.push((performance.now() - start) * 1000);
  }
  const cpuPerCall = (mainCpuUs() - cpu) / times.length;
  times.sort((a, b) => a - b);
  return [times[times.length >> 1], cpuPerCall];
}
const manifest = new URL('./Cargo.toml', import.meta.url).pathname;
execFileSync('cargo', ['build', '--release', '--quiet', '--example', 'pool_rate', '--manifest-path', manifest], { stdio: 'inherit' });
const target = process.env.CARGO_TARGET_DIR || new URL('../../target', import.meta.url).pathname;
const rows = { 'pool get/run/return': [], 'one pooled sandbox, back to back': [] };
for (let round = 0; round < 3; round++) {
  const rust = execFileSync(`${target}/release/examples/pool_rate`, [String(seconds)], { encoding: 'utf8' });
  for (const line of rust.trim().split('\n')) {
    const [name, median, cpu] = line.split('\t');
    rows[name].push({ rust: [Number(median), Number(cpu)] });
  }
  rows['pool get/run/return'][round].node = await perCall(() => pool.run(['true']));
  rows['one pooled sandbox, back to back'][round].node = await perCall(() => loan.run(['true']));
}
console.log('\nper call, one in flight: median wall µs (calling thread CPU µs); Node minus Rust');
for (const [name, rounds] of Object.entries(rows)) {
  for (const { rust, node } of rounds) {
    console.log(`${name.padEnd(34)} Rust ${rust[0].toFixed(0).padStart(5)} (${rust[1].toFixed(0).padStart(3)})  Node ${node[0].toFixed(0).padStart(5)} (${node[1].toFixed(0).padStart(3)})  overhead ${(node[0] - rust[0]).toFixed(0).padStart(5)} µs wall, ${(node[1] - rust[1]).toFixed(0).padStart(4)} µs CPU`);
  }
}
await loan.close();
await pool.close();
