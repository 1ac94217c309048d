// spawn(): live output, stdin while it runs, kill, abort, busy, pipelines;
// and that work never blocks the event loop.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as hv from '../index.js';
import { BUSYBOX, sh } from './helpers.mjs';

test('the first chunk arrives while the program still runs', async () => {
  const sb = new hv.Sandbox({ timeoutMs: 60000 });
  try {
    const p = sb.spawn(sh('echo first; sleep 1000; echo never'), { encoding: 'utf8' });
    const it = p.stdout[Symbol.asyncIterator]();
    const { value } = await it.next();
    assert.equal(value, 'first\n');
    assert.equal(p.exitCode, null, 'still running');
    p.kill();
    await assert.rejects(p.wait(), (e) => {
      assert.ok(e instanceof hv.AbortError);
      assert.equal(e.code, 'ERR_HVSANDBOX_ABORTED');
      assert.equal(e.stdout, 'first\n');
      return true;
    });
    // A kill never reaches the next run.
    assert.equal((await sb.run(sh('echo again'), { encoding: 'utf8' })).stdout, 'again\n');
  } finally {
    await sb.close();
  }
});

test('a conversation over stdin and stdout', async () => {
  await using_(new hv.Sandbox({ timeoutMs: 30000 }), async (sb) => {
    const p = sb.spawn(sh('while read q; do [ "$q" = bye ] && exit 0; echo "answer to $q"; done'), { encoding: 'utf8' });
    const answers = [];
    const lines = lineReader(p.stdout);
    for (const q of ['one', 'two', 'three']) {
      p.stdin.write(`${q}\n`);
      answers.push(await lines.next());
    }
    p.stdin.end('bye\n');
    assert.deepEqual(answers, ['answer to one', 'answer to two', 'answer to three']);
    const r = await p.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'answer to one\nanswer to two\nanswer to three\n');
  });
});

test('wait() alone: stdin ends, the whole output comes back', async () => {
  await using_(new hv.Sandbox(), async (sb) => {
    const p = sb.spawn(sh('cat; echo done >&2'));
    const r = await p.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.length, 0);
    assert.equal(r.stderr.toString(), 'done\n');
    const q = sb.spawn([BUSYBOX, 'tr', 'a-z', 'A-Z'], { input: 'given input\n', encoding: 'utf8' });
    assert.equal((await q.wait()).stdout, 'GIVEN INPUT\n');
  });
});

test('a busybox pipeline streams a large output through a slow reader', async () => {
  await using_(new hv.Sandbox({ timeoutMs: 60000 }), async (sb) => {
    const script = 'seq 1 200000 | sed "s/$/ line/" | grep -v 7 | awk "{ n += \\$1 } END { print n }" >&2; seq 1 300000';
    const p = sb.spawn(sh(script), { unlimitedStreaming: true });
    let bytes = 0;
    let last = '';
    for await (const chunk of p.stdout) {
      bytes += chunk.length;
      last = (last + chunk.toString()).slice(-20);
      // A slow consumer: the guest waits (backpressure), nothing is lost.
      if (bytes % 7 === 0) await new Promise((r) => setImmediate(r));
    }
    const r = await p.wait();
    assert.equal(r.exitCode, 0);
    let want = 0;
    for (let i = 1; i <= 300000; i++) want += String(i).length + 1;
    assert.equal(bytes, want);
    assert.ok(last.endsWith('299999\n300000\n'));
    let sum = 0;
    for (let i = 1; i <= 200000; i++) if (!String(i).includes('7')) sum += i;
    assert.equal(r.stderr.toString(), `${sum}\n`);
    assert.equal(r.stdoutTruncated, true, 'wait() keeps maxOutput (1M) of it');
  });
});

test('the sandbox is busy while a process runs', async () => {
  await using_(new hv.Sandbox({ timeoutMs: 30000 }), async (sb) => {
    const p = sb.spawn(sh('read x; echo got $x'), { encoding: 'utf8' });
    await assert.rejects(sb.run([BUSYBOX, 'true']), (e) => e instanceof hv.SandboxBusyError && e.code === 'ERR_HVSANDBOX_BUSY');
    p.stdin.end('x\n');
    assert.equal((await p.wait()).stdout, 'got x\n');
    assert.equal((await sb.run([BUSYBOX, 'true'])).exitCode, 0);
  });
});

test('AbortSignal: aborts a run and a spawned process, with partial output and the reason', async () => {
  const sb = new hv.Sandbox({ timeoutMs: 60000 });
  try {
    const ac = new AbortController();
    const p = sb.spawn(sh('echo started; sleep 1000'), { signal: ac.signal, encoding: 'utf8' });
    for await (const c of p.stdout) if (c.includes('started')) break;
    ac.abort(new Error('user gave up'));
    await assert.rejects(p.wait(), (e) => {
      assert.ok(e instanceof hv.AbortError);
      assert.equal(e.name, 'AbortError');
      assert.equal(e.cause.message, 'user gave up');
      return true;
    });

    // run(): abort once its first line is out (seen through onStdout).
    const ac2 = new AbortController();
    await assert.rejects(
      sb.run(sh('echo part; sleep 1000'), { signal: ac2.signal, encoding: 'utf8', onStdout: () => ac2.abort() }),
      (e) => e.code === 'ERR_HVSANDBOX_ABORTED' && e.stdout === 'part\n',
    );
    // Without callbacks (the collected path): abort while it sleeps.
    const ac3 = new AbortController();
    const running = sb.run(sh('sleep 1000'), { signal: ac3.signal });
    setTimeout(() => ac3.abort(), 20);
    await assert.rejects(running, (e) => e instanceof hv.AbortError && e.cause?.name === 'AbortError');
    // Already aborted: never starts.
    await assert.rejects(hv.run([BUSYBOX, 'true'], { signal: AbortSignal.abort() }), { code: 'ERR_HVSANDBOX_ABORTED' });
    // And the sandbox still works.
    assert.equal((await sb.run([BUSYBOX, 'true'])).exitCode, 0);
  } finally {
    await sb.close();
  }
});

test('close() stops a running process and a queued run; the sandbox refuses more', async () => {
  const sb = new hv.Sandbox({ timeoutMs: 60000 });
  const p = sb.spawn(sh('echo up; sleep 1000'));
  for await (const c of p.stdout) if (c.toString().includes('up')) break;
  await sb.close();
  await assert.rejects(p.wait(), { code: 'ERR_HVSANDBOX_ABORTED' });
  await assert.rejects(sb.run([BUSYBOX, 'true']), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
  assert.equal(sb.closed, true);
  await sb.close(); // idempotent
});

test('Symbol.asyncDispose closes sandboxes and kills processes', async () => {
  const sb = new hv.Sandbox({ timeoutMs: 60000 });
  const p = sb.spawn(sh('sleep 1000'));
  await p[Symbol.asyncDispose]();
  await assert.rejects(p.wait(), { code: 'ERR_HVSANDBOX_ABORTED' });
  await sb[Symbol.asyncDispose]();
  assert.equal(sb.closed, true);
});

test('the event loop keeps turning while guests run', async () => {
  // A guest spinning on its CPU (no system calls), in run() and spawn():
  // timers fire meanwhile; the host stops the guest after 20 ticks.
  const sb = new hv.Sandbox({ timeoutMs: 60000 });
  try {
    for (const mode of ['run', 'spawn']) {
      let ticks = 0;
      let ended = false;
      const ac = new AbortController();
      const timer = setInterval(() => {
        ticks += 1;
        if (ticks === 20) ac.abort();
      }, 2);
      const done = mode === 'run'
        ? sb.run(sh('while :; do :; done'), { signal: ac.signal })
        : sb.spawn(sh('while :; do :; done'), { signal: ac.signal }).wait();
      await assert.rejects(done.finally(() => { ended = true; }), { code: 'ERR_HVSANDBOX_ABORTED' });
      clearInterval(timer);
      assert.ok(ended);
      assert.ok(ticks >= 20, `${mode}: ${ticks} ticks`);
    }
  } finally {
    await sb.close();
  }
});

test('many runs in flight at once', async () => {
  // 12 processes in 12 sandboxes, all started and waiting at the same time.
  const sbs = Array.from({ length: 12 }, () => new hv.Sandbox({ timeoutMs: 60000 }));
  try {
    const ps = sbs.map((sb, i) => sb.spawn(sh(`echo ready ${i}; read x; echo $((x * ${i}))`), { encoding: 'utf8' }));
    const lines = ps.map((p) => lineReader(p.stdout));
    assert.deepEqual(await Promise.all(lines.map((l) => l.next())), ps.map((_, i) => `ready ${i}`));
    for (const p of ps) p.stdin.end('3\n');
    assert.deepEqual(await Promise.all(lines.map((l) => l.next())), ps.map((_, i) => String(3 * i)));
    await Promise.all(ps.map((p) => p.wait()));
    // And 32 plain runs in flight from run().
    const rs = await Promise.all(Array.from({ length: 32 }, (_, i) => hv.run([BUSYBOX, 'echo', String(i)], { encoding: 'utf8' })));
    assert.deepEqual(rs.map((r) => r.stdout), Array.from({ length: 32 }, (_, i) => `${i}\n`));
  } finally {
    await Promise.all(sbs.map((sb) => sb.close()));
  }
});

test('runs queued on one sandbox run in order', async () => {
  await using_(new hv.Sandbox(), async (sb) => {
    const rs = await Promise.all([1, 2, 3, 4, 5].map((i) => sb.run(sh(`echo ${i}`), { encoding: 'utf8' })));
    assert.deepEqual(rs.map((r) => r.stdout), ['1\n', '2\n', '3\n', '4\n', '5\n']);
  });
});

/** `await using` for Node 20 (which does not parse it). */
async function using_(resource, body) {
  try {
    return await body(resource);
  } finally {
    await resource[Symbol.asyncDispose]();
  }
}

/** Reads whole lines from a Readable: next() resolves to the next line. */
function lineReader(stream) {
  stream.setEncoding('utf8');
  let buf = '';
  const it = stream[Symbol.asyncIterator]();
  return {
    async next() {
      while (!buf.includes('\n')) {
        const { value, done } = await it.next();
        if (done) throw new Error(`stream ended before a line (have ${JSON.stringify(buf)})`);
        buf += value;
      }
      const i = buf.indexOf('\n');
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      return line;
    },
  };
}
