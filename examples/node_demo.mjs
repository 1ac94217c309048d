// hvsandbox from Node: a run, a live process, a snapshot and a pool.
//   (cd bindings/node && ./build.sh) && node examples/node_demo.mjs
// In an application: import { run, Sandbox, SandboxPool } from 'hvsandbox';
import { run, Sandbox, SandboxPool } from '../bindings/node/index.js';

// One run in a sandbox of its own: limits, stdin, output.
const r = await run(['/bin/busybox', 'wc', '-l'], { input: 'a\nb\n', timeoutMs: 2000, memory: '64M', encoding: 'utf8' });
console.log(`wc -l: ${r.stdout.trim()} (exit ${r.exitCode}, ${r.stats.syscalls} syscalls)`);

// A limit is a typed error carrying what the program printed.
try {
  await run(['/bin/busybox', 'sh', '-c', 'echo working; sleep 10'], { timeoutMs: 200 });
} catch (e) {
  console.log(`${e.code}: printed ${JSON.stringify(e.stdout.toString())}`);
}

// A live process: its output as it is produced, its stdin while it runs.
const sb = new Sandbox({ timeoutMs: 5000 });
const p = sb.spawn(['/bin/busybox', 'sh', '-c', 'echo name?; read n; echo hi $n'], { encoding: 'utf8' });
for await (const chunk of p.stdout) {
  process.stdout.write(`> ${chunk}`);
  if (chunk.includes('name?')) p.stdin.end('ada\n');
}
console.log(`exit ${(await p.wait()).exitCode}`);

// A snapshot at the program's entry, then a pool of warm clones.
const snap = await sb.snapshot(['/bin/busybox', 'sh'], { at: 'entry' });
await sb.close();
const pool = new SandboxPool(snap, { size: 4, timeoutMs: 2000 });
const runs = await Promise.all([1, 2, 3].map((i) => pool.run(['sh', '-c', `echo clone ${i}`], { encoding: 'utf8' })));
console.log(runs.map((x) => x.stdout.trim()).join(', '));
await pool.close();
