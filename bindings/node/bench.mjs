// Runs per second from Node (for BENCHMARKS.md; not part of the tests):
//   run(['/bin/busybox', 'true']) with 1 and 8 in flight, beside
//   child_process.execFile of the same binary; and a warm pooled run
//   (a snapshot of busybox at its entry) from Node.
//   node bench.mjs [seconds per case, default 3]
import { execFile } from 'node:child_process';
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
await loan.close();
await pool.close();
