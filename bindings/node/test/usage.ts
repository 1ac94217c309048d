// Compiled by types.test.mjs with `tsc --noEmit --strict`: the README's
// usage against index.d.ts. Never run.
import {
  run, Sandbox, SandboxPool, Snapshot, SandboxError, TimeoutError, AbortError, ErrorCodes,
  type RunResult, type SandboxProcess, type ErrorCode,
} from 'hvsandbox';

async function main(signal: AbortSignal): Promise<void> {
  const r = await run(['/bin/busybox', 'sh', '-c', 'echo hi'], { timeoutMs: 2000, memory: '64M', signal });
  const out: Buffer = r.stdout;
  const code: number | null = r.exitCode;
  const wall: number = r.stats.wallMs;
  const text = await run(['/bin/busybox', 'echo'], { encoding: 'utf8', input: new Uint8Array([1]) });
  const s: string = text.stdout;
  const files: Record<string, string> = text.files;

  await using sb = new Sandbox({
    memory: 64 << 20, cpuTimeMs: 500, maxOutput: '1M', failOnOutputLimit: true, env: { A: 'b' },
    mounts: { '/data': '/srv' }, files: { '/x': 'y', '/z': { data: Buffer.from('z'), mode: 0o755 } },
    cwd: '/', seccomp: 'enforce', hugePages: 'prefer', maxProcesses: 8, maxOpenFiles: 64, maxInput: '1M',
    maxCollectBytes: 1024, maxCollectFiles: 4,
  });
  const res: RunResult = await sb.run(['/bin/busybox', 'ls'], {
    collect: ['/out'], envClear: true, cwd: '/tmp', onStdout: (c: Buffer) => c.length, onStderr: (c) => c,
  });
  const p: SandboxProcess<'utf8'> = sb.spawn(['/bin/busybox', 'cat'], { encoding: 'utf8', unlimitedStreaming: true });
  p.stdin.write('x');
  p.stdin.end();
  for await (const chunk of p.stdout) console.log(chunk);
  const done: RunResult<'utf8'> = await p.wait();
  const str: string = done.stdout;
  p.kill();

  const snap: Snapshot = await sb.snapshot(['/bin/busybox', 'sh'], { at: 'entry' });
  await snap.save('/tmp/x.snap');
  const loaded = await Snapshot.load('/tmp/x.snap');
  loaded.copyMemory();
  loaded.copyMemory(false);
  const point: 'entry' | 'checkpoint' = loaded.point;
  const clone = Sandbox.fromSnapshot(loaded, { timeoutMs: 1000 });
  await clone.run(['-c', 'echo resumed']);
  await clone.run();
  await using pool = new SandboxPool(snap, { size: 4 });
  const pooled = await pool.run(['-c', 'true'], { input: 'x' });
  const loan = await pool.acquire();
  await loan.close();
  const ready: number = pool.ready;

  try {
    await run(['/bin/false']);
  } catch (e) {
    if (e instanceof TimeoutError) console.log(e.stdout, e.cpu, e.limit);
    if (e instanceof AbortError) console.log(e.cause);
    if (e instanceof SandboxError) {
      const c: ErrorCode = e.code;
      if (c === ErrorCodes.MEMORY_LIMIT_EXCEEDED) console.log(e.kind);
    }
  }
  void [out, code, wall, s, files, res, str, point, pooled, ready];
}
void main;
