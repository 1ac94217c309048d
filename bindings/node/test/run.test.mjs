// run() and Sandbox.run(): every option, results, typed errors.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import * as hv from '../index.js';
import { BUSYBOX, REPO, guestProgram, sh } from './helpers.mjs';

test('run: output, exit code and stats', async () => {
  const r = await hv.run([BUSYBOX, 'echo', 'hi'], { timeoutMs: 5000, memory: '64M' });
  assert.ok(Buffer.isBuffer(r.stdout));
  assert.equal(r.stdout.toString(), 'hi\n');
  assert.equal(r.stderr.length, 0);
  assert.equal(r.exitCode, 0);
  assert.equal(r.signal, null);
  assert.equal(r.truncated, false);
  assert.equal(r.fault, null);
  assert.ok(r.stats.syscalls > 0 && r.stats.exits > 0 && r.stats.memoryUsed > 0);
  assert.equal(typeof r.stats.wallMs, 'number');
  assert.equal(typeof r.stats.cpuMs, 'number');
});

test('a non-zero exit and a signal are results, not errors', async () => {
  const r = await hv.run(sh('echo out; echo err >&2; exit 3'), { encoding: 'utf8' });
  assert.deepEqual([r.exitCode, r.stdout, r.stderr], [3, 'out\n', 'err\n']);
  const s = await hv.run(sh('kill -SEGV $$'));
  assert.equal(s.exitCode, null);
  assert.equal(s.signal, 'SIGSEGV');
});

test('input: string, Buffer and Uint8Array', async () => {
  for (const input of ['a\nb\n', Buffer.from('a\nb\n'), new TextEncoder().encode('a\nb\n')]) {
    const r = await hv.run([BUSYBOX, 'wc', '-l'], { input, encoding: 'utf8' });
    assert.equal(r.stdout.trim(), '2');
  }
  // No input: the program reads the end of input at once.
  assert.equal((await hv.run([BUSYBOX, 'cat'])).stdout.length, 0);
});

test('env, envClear, cwd, files, collect', async () => {
  const sb = new hv.Sandbox({ env: { A: 'sandbox', B: 'b' }, cwd: '/work', files: { '/etc/motd': 'motd\n' } });
  try {
    let r = await sb.run(sh('echo $A $B; pwd; cat /etc/motd'), { env: { A: 'run' }, encoding: 'utf8' });
    assert.equal(r.stdout, 'run b\n/work\nmotd\n');
    r = await sb.run(sh('echo "[$B]"'), { envClear: true, encoding: 'utf8' });
    assert.equal(r.stdout, '[]\n');
    r = await sb.run(sh('pwd; cat in.txt; ls -l /x.sh | cut -c1-10; /x.sh'), {
      cwd: '/tmp',
      files: { '/tmp/in.txt': Buffer.from('data\n'), '/x.sh': { data: '#!/bin/busybox sh\necho script\n', mode: 0o755 } },
      encoding: 'utf8',
    });
    assert.equal(r.stdout, '/tmp\ndata\n-rwxr-xr-x\nscript\n');
    r = await sb.run(sh('mkdir -p /tmp/out/d; echo a > /tmp/out/a; printf b > /tmp/out/d/b'), { collect: ['/tmp/out'] });
    assert.deepEqual(Object.keys(r.files).sort(), ['/tmp/out/a', '/tmp/out/d/b']);
    assert.equal(r.files['/tmp/out/d/b'].toString(), 'b');
    assert.equal(r.filesTruncated, false);
  } finally {
    await sb.close();
  }
});

test('maxCollectFiles and maxCollectBytes cap what comes back', async () => {
  const script = 'mkdir /tmp/o; echo a > /tmp/o/a; echo b > /tmp/o/b';
  let r = await hv.run(sh(script), { collect: ['/tmp/o'], maxCollectFiles: 1 });
  assert.equal(Object.keys(r.files).length, 1);
  assert.equal(r.filesTruncated, true);
  r = await hv.run(sh('mkdir /tmp/o; head -c 5000 /dev/zero > /tmp/o/big'), { collect: ['/tmp/o'], maxCollectBytes: '1K' });
  assert.equal(r.filesTruncated, true);
});

test('mounts: a read-only host directory, by object and by list; PATH lookup', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hvsandbox-node-'));
  try {
    writeFileSync(join(dir, 'f.txt'), 'from host\n');
    execFileSync('chmod', ['-R', 'o+rX', dir]);
    let r = await hv.run(['busybox', 'cat', '/data/f.txt'], { mounts: { '/bin': '/bin', '/data': dir }, encoding: 'utf8' });
    assert.equal(r.stdout, 'from host\n');
    r = await hv.run(sh('echo x > /data/g.txt'), { mounts: [{ host: dir, guest: '/data' }], encoding: 'utf8' });
    assert.notEqual(r.exitCode, 0, 'mounts are read-only');
    r = await hv.run(sh('head -c 5 /proc/version'), { mounts: [{ host: '/proc', guest: '/proc', kernelFs: true }], encoding: 'utf8' });
    assert.equal(r.stdout, 'Linux');
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('image: a program given as bytes', async () => {
  const r = await hv.run(['busybox', 'echo', 'from memory'], { image: readFileSync(BUSYBOX), encoding: 'utf8' });
  assert.equal(r.stdout, 'from memory\n');
});

test('maxOutput truncates; failOnOutputLimit fails with the partial output', async () => {
  const r = await hv.run(sh('head -c 5000 /dev/zero'), { maxOutput: 1000 });
  assert.equal(r.stdout.length, 1000);
  assert.equal(r.truncated, true);
  assert.equal(r.stdoutTruncated, true);
  await assert.rejects(hv.run(sh('head -c 5000 /dev/zero'), { maxOutput: '1000', failOnOutputLimit: true }), (e) => {
    assert.ok(e instanceof hv.OutputLimitError && e instanceof hv.SandboxError && e instanceof Error);
    assert.equal(e.code, 'ERR_HVSANDBOX_OUTPUT_LIMIT');
    assert.equal(e.kind, 'OUTPUT_LIMIT_EXCEEDED');
    assert.equal(e.stream, 'stdout');
    assert.equal(e.limit, 1000);
    assert.equal(e.stdout.length, 1000);
    return true;
  });
});

test('timeoutMs and cpuTimeMs: TimeoutError with what was printed', async () => {
  await assert.rejects(hv.run(sh('echo before; sleep 100'), { timeoutMs: 300, encoding: 'utf8' }), (e) => {
    assert.ok(e instanceof hv.TimeoutError);
    assert.equal(e.code, 'ERR_HVSANDBOX_TIMEOUT');
    assert.equal(e.cpu, false);
    assert.equal(e.limit, 300);
    assert.equal(e.stdout, 'before\n');
    return true;
  });
  await assert.rejects(hv.run(sh('echo spin; while :; do :; done'), { cpuTimeMs: 200, timeoutMs: 30000 }), (e) => {
    assert.equal(e.code, 'ERR_HVSANDBOX_TIMEOUT');
    assert.equal(e.cpu, true);
    assert.equal(e.stdout.toString(), 'spin\n');
    return true;
  });
});

test('memory: MemoryLimitError with what was printed', async () => {
  await assert.rejects(hv.run([guestProgram('guest-programs/oom')], { memory: '32M', timeoutMs: 20000 }), (e) => {
    assert.ok(e instanceof hv.MemoryLimitError, String(e));
    assert.equal(e.code, 'ERR_HVSANDBOX_MEMORY_LIMIT');
    assert.equal(e.limit, 32 << 20);
    assert.match(e.stdout.toString(), /^start\n/);
    return true;
  });
});

test('maxProcesses, maxOpenFiles, maxInput, seccomp', async () => {
  let r = await hv.run(sh('sleep 1 & sleep 1 & sleep 1 & wait'), { maxProcesses: 2, encoding: 'utf8' });
  assert.match(r.stderr, /can't fork/);
  r = await hv.run(sh('exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null; echo ok'), { maxOpenFiles: 5, encoding: 'utf8' });
  assert.match(r.stderr, /Too many open files/);
  await assert.rejects(hv.run([BUSYBOX, 'wc', '-c'], { input: Buffer.alloc(5000), maxInput: 1000 }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
  for (const seccomp of ['enforce', 'log', 'off']) {
    assert.equal((await hv.run([BUSYBOX, 'true'], { seccomp })).exitCode, 0);
  }
});

/** Pages free in the host's hugetlb pool (`HugePages_Free`). */
function hugetlbFree() {
  const m = /^HugePages_Free:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

test('hugePages: a bad value is refused as a bad seccomp is', () => {
  let seccomp;
  assert.throws(() => new hv.Sandbox({ seccomp: 'on' }), (e) => { seccomp = e; return true; });
  assert.throws(() => new hv.Sandbox({ hugePages: 'on' }), (e) => {
    assert.equal(e.constructor, seccomp.constructor);
    assert.equal(e.code, seccomp.code);
    assert.match(e.message, /hugePages must be 'off', 'prefer' or 'require', got "on"/);
    return true;
  });
});

test('hugePages: require fails when the pool is too small; prefer falls back', async (t) => {
  const mib = hugetlbFree() * 2 + 64;
  if (mib > 16384) return t.skip(`the hugetlb pool holds more than a VM may have (${mib} MiB)`);
  const memory = `${mib}M`;
  await assert.rejects(hv.run([BUSYBOX, 'echo', 'hi'], { memory, hugePages: 'require' }), (e) => {
    assert.ok(e instanceof hv.InvalidConfigError, String(e));
    assert.equal(e.code, 'ERR_HVSANDBOX_INVALID_CONFIG');
    assert.match(e.message, /hugetlb pool/);
    return true;
  });
  const r = await hv.run([BUSYBOX, 'echo', 'hi'], { memory, hugePages: 'prefer', encoding: 'utf8' });
  assert.deepEqual([r.exitCode, r.stdout], [0, 'hi\n']);
});

test('hugePages: require runs from the pool when it has room', async (t) => {
  const free = hugetlbFree();
  if (free < 29) return t.skip(`the hugetlb pool has ${free} free pages; a 64M VM needs 29 (vm.nr_hugepages)`);
  const sb = new hv.Sandbox({ memory: '64M', hugePages: 'require' });
  try {
    const r = await sb.run([BUSYBOX, 'echo', 'hi'], { encoding: 'utf8' });
    assert.deepEqual([r.exitCode, r.stdout], [0, 'hi\n']);
  } finally {
    await sb.close();
  }
});

test('invalid programs and configurations are typed errors', async () => {
  await assert.rejects(hv.run(['/nonexistent']), (e) => {
    assert.ok(e instanceof hv.InvalidProgramError);
    assert.equal(e.code, 'ERR_HVSANDBOX_INVALID_PROGRAM');
    assert.equal(e.program, '/nonexistent');
    return true;
  });
  await assert.rejects(hv.run(['/etc/passwd']), { code: 'ERR_HVSANDBOX_INVALID_PROGRAM' });
  await assert.rejects(hv.run([BUSYBOX, 'true'], { memory: '3M' }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG', name: 'InvalidConfigError' });
  assert.throws(() => new hv.Sandbox({ memory: 3 << 20 }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
  assert.throws(() => new hv.Sandbox({ mounts: { '/d': '/nonexistent-dir' } }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
});

test('bad options throw TypeError naming the option', async () => {
  const cases = [
    [() => new hv.Sandbox({ memry: '64M' }), /unknown option 'memry'/],
    [() => new hv.Sandbox({ memory: 'lots' }), /memory must be/],
    [() => new hv.Sandbox({ memory: -1 }), /memory must be/],
    [() => new hv.Sandbox({ timeoutMs: 0 }), /timeoutMs must be/],
    [() => new hv.Sandbox({ timeoutMs: '1s' }), /timeoutMs must be/],
    [() => new hv.Sandbox({ env: { A: 1 } }), /env\.A must be a string/],
    [() => new hv.Sandbox({ files: { '/a': 5 } }), /files\['\/a'\] must be/],
    [() => new hv.Sandbox({ seccomp: 'strict' }), /seccomp must be/],
    [() => new hv.Sandbox({ hugePages: 'on' }), /hugePages must be/],
    [() => new hv.Sandbox({ maxProcesses: 1.5 }), /maxProcesses must be/],
    [() => new hv.Sandbox({ failOnOutputLimit: 'yes' }), /failOnOutputLimit must be a boolean/],
    [() => new hv.Sandbox({ mounts: [{ host: '/bin' }] }), /mounts\[0\]\.guest must be a string/],
    [() => new hv.Sandbox('64M'), /options must be an object/],
  ];
  for (const [f, msg] of cases) assert.throws(f, (e) => e instanceof TypeError && msg.test(e.message), String(msg));
  const asyncCases = [
    [() => hv.run('/bin/busybox'), /args must be an array of strings/],
    [() => hv.run([]), /args must name a program/],
    [() => hv.run([BUSYBOX], { input: 5 }), /input must be a string, Buffer or Uint8Array/],
    [() => hv.run([BUSYBOX], { signal: {} }), /signal must be an AbortSignal/],
    [() => hv.run([BUSYBOX], { encoding: 'klingon' }), /encoding must be/],
    [() => hv.run([BUSYBOX], { onStdout: 'x' }), /onStdout must be a function/],
    [() => hv.run([BUSYBOX], { timeout: 5 }), /unknown option 'timeout'/],
  ];
  for (const [f, msg] of asyncCases) await assert.rejects(f(), (e) => e instanceof TypeError && msg.test(e.message), String(msg));
});

test('onStdout/onStderr see chunks as they come; the result still has it all', async () => {
  const out = [];
  const err = [];
  const r = await hv.run(sh('echo one; echo two >&2; echo three'), {
    encoding: 'utf8', onStdout: (c) => out.push(c), onStderr: (c) => err.push(c),
  });
  assert.equal(out.join(''), 'one\nthree\n');
  assert.equal(err.join(''), 'two\n');
  assert.equal(r.stdout, 'one\nthree\n');
  assert.equal(r.stderr, 'two\n');
  // A callback that throws stops the run; run() rejects with its error.
  await assert.rejects(
    hv.run(sh('echo a; sleep 100'), { timeoutMs: 20000, onStdout: () => { throw new Error('boom'); } }),
    { message: 'boom' },
  );
});

test('a crashed guest runtime poisons its sandbox; a loaded non-snapshot is SNAPSHOT_INVALID', async () => {
  const sb = new hv.Sandbox({ timeoutMs: 5000 });
  try {
    await assert.rejects(sb.run([guestProgram('hostile/hypercall'), 'one', 'read-wild']), (e) => {
      assert.ok(e instanceof hv.GuestCrashedError, String(e));
      assert.equal(e.code, 'ERR_HVSANDBOX_GUEST_CRASHED');
      return true;
    });
    assert.equal(sb.poisoned, true);
    await assert.rejects(sb.run([BUSYBOX, 'true']), { code: 'ERR_HVSANDBOX_POISONED', name: 'SandboxPoisonedError' });
  } finally {
    await sb.close();
  }
  await assert.rejects(hv.Snapshot.load('/etc/passwd'), { code: 'ERR_HVSANDBOX_SNAPSHOT_INVALID', name: 'SnapshotInvalidError' });
  await assert.rejects(hv.Snapshot.fromBytes(Buffer.from('not a snapshot')), { code: 'ERR_HVSANDBOX_SNAPSHOT_INVALID' });
});

test('without access to /dev/kvm: KvmUnavailableError saying what to do', { skip: process.getuid() !== 0 && 'needs root to drop to nobody' }, () => {
  const script = `require(${JSON.stringify(join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'index.js'))})
    .run(['/bin/busybox', 'true']).then(() => console.log('ran'), (e) => console.log(e.code, e.name, e.message));`;
  const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8' });
  assert.match(out, /^ERR_HVSANDBOX_KVM_UNAVAILABLE KvmUnavailableError .*\/dev\/kvm/);
});

test('every Rust error kind has a stable code', () => {
  assert.deepEqual(hv.ErrorCodes, {
    TIMEOUT: 'ERR_HVSANDBOX_TIMEOUT',
    CANCELLED: 'ERR_HVSANDBOX_ABORTED',
    MEMORY_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_MEMORY_LIMIT',
    OUTPUT_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_OUTPUT_LIMIT',
    GUEST_CRASHED: 'ERR_HVSANDBOX_GUEST_CRASHED',
    INVALID_PROGRAM: 'ERR_HVSANDBOX_INVALID_PROGRAM',
    INVALID_CONFIG: 'ERR_HVSANDBOX_INVALID_CONFIG',
    KVM_UNAVAILABLE: 'ERR_HVSANDBOX_KVM_UNAVAILABLE',
    SANDBOX_POISONED: 'ERR_HVSANDBOX_POISONED',
    SANDBOX_BUSY: 'ERR_HVSANDBOX_BUSY',
    JAIL_VIOLATION: 'ERR_HVSANDBOX_JAIL_VIOLATION',
    SNAPSHOT_INVALID: 'ERR_HVSANDBOX_SNAPSHOT_INVALID',
    INTERNAL: 'ERR_HVSANDBOX_INTERNAL',
  });
  const e = new hv.JailViolationError('x');
  assert.equal(e.code, 'ERR_HVSANDBOX_JAIL_VIOLATION');
  assert.equal(e.name, 'JailViolationError');
  assert.ok(e instanceof hv.SandboxError);
});

test('a pending run keeps Node alive, and Node exits once nothing is pending', () => {
  // A script that does nothing but await a run: it must print after the
  // run (the event loop stayed up for it) and then exit by itself, 0.
  const pkg = join(REPO, 'bindings', 'node', 'index.js');
  const script = `
    const hv = require(${JSON.stringify(pkg)});
    const sb = new hv.Sandbox({ timeoutMs: 20000 });
    sb.run(['${BUSYBOX}', 'sh', '-c', 'sleep 0.2; echo slept'], { encoding: 'utf8' })
      .then((r) => { console.log('result', r.exitCode, r.stdout.trim()); return sb.close(); });`;
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  assert.equal(out, 'result 0 slept\n');
});

test('runs from a worker thread (no main-thread fast path there) work too', async () => {
  const { Worker } = await import('node:worker_threads');
  const pkg = join(REPO, 'bindings', 'node', 'index.js');
  const w = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const hv = require(${JSON.stringify(pkg)});
     (async () => {
       const outs = [];
       const sb = new hv.Sandbox({ timeoutMs: 20000 });
       for (let i = 0; i < 3; i++) outs.push((await sb.run(['${BUSYBOX}', 'echo', String(i)], { encoding: 'utf8' })).stdout);
       await sb.close();
       outs.push((await hv.run(['${BUSYBOX}', 'echo', 'once'], { encoding: 'utf8' })).stdout);
       parentPort.postMessage(outs);
     })().catch((e) => parentPort.postMessage(String(e)));`,
    { eval: true },
  );
  const [msg] = await Promise.all([new Promise((resolve) => w.once('message', resolve)), new Promise((r) => w.once('exit', r))]);
  assert.deepEqual(msg, ['0\n', '1\n', '2\n', 'once\n']);
});

test('runs that end together each get their own result (more than the addon keeps rows for)', async () => {
  // The addon settles the runs that ended since the event loop last
  // looked all at once, their numbers in rows of a shared table (64 rows;
  // more than that get arrays of their own). 80 runs with distinct exit
  // codes, half with output; the main thread is then held so that most of
  // them end before it looks again.
  const n = 80;
  const runs = Array.from({ length: n }, (_, i) =>
    hv.run(sh(i % 2 ? `echo out ${i}; exit ${i}` : `exit ${i}`), { memory: '32M', timeoutMs: 60000, encoding: 'utf8' }));
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
  const rs = await Promise.all(runs);
  assert.deepEqual(rs.map((r) => r.exitCode), Array.from({ length: n }, (_, i) => i));
  assert.deepEqual(rs.map((r) => r.stdout), Array.from({ length: n }, (_, i) => (i % 2 ? `out ${i}\n` : '')));
  for (const r of rs) {
    assert.equal(r.signal, null);
    assert.equal(r.truncated, false);
    assert.equal(r.stats.stdoutBytes, r.stdout.length);
    assert.ok(r.stats.syscalls > 0 && r.stats.memoryUsed > 0 && r.stats.wallMs > 0, JSON.stringify(r.stats));
  }
});

test('stats.rewrittenSites and slowSyscalls: sites rewritten and calls through them, or none when HVSANDBOX_REWRITE=0', () => {
  // The switch is read once per process: each setting in a Node of its own.
  const pkg = join(REPO, 'bindings', 'node', 'index.js');
  const script = `
    const hv = require(${JSON.stringify(pkg)});
    hv.run(['${BUSYBOX}', 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=1', 'count=2000'], { timeoutMs: 60000 })
      .then((r) => console.log(r.exitCode, r.stats.rewrittenSites, r.stats.syscalls, r.stats.slowSyscalls));`;
  const stats = (value) => {
    const out = execFileSync(process.execPath, ['-e', script], {
      encoding: 'utf8', timeout: 60000, env: { ...process.env, HVSANDBOX_REWRITE: value },
    }).trim().split(' ').map(Number);
    assert.equal(out[0], 0);
    assert.ok(out[2] > 4000, String(out));
    return { sites: out[1], calls: out[2], slow: out[3] };
  };
  const on = stats('1');
  // dd's 4000 one-byte reads and writes come from two sites, fast after
  // their first calls.
  assert.ok(on.sites > 0 && on.slow > 0 && on.slow < on.calls / 10, JSON.stringify(on));
  const off = stats('0');
  assert.equal(off.sites, 0);
  assert.equal(off.slow, off.calls);
});
