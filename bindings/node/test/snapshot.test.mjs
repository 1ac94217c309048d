// Snapshots (entry, checkpoint, save/load) and pools.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import * as hv from '../index.js';
import { BUSYBOX, sh } from './helpers.mjs';

// Reads its arguments at the checkpoint, then echoes them and its stdin.
const CHECKPOINT = 'args=$(tr "\\0" " " < /dev/hvsandbox/checkpoint); echo "args: $args"; cat';

test('an entry snapshot: each run brings its own arguments', async () => {
  const sb = new hv.Sandbox({ env: { GREETING: 'hello' } });
  try {
    const snap = await sb.snapshot([BUSYBOX, 'echo', 'taken'], { at: 'entry' });
    assert.equal(snap.point, 'entry');
    assert.deepEqual(snap.args, ['echo', 'taken']);
    assert.equal(snap.env.GREETING, 'hello');
    assert.equal(snap.memoryBytes, 64 << 20);
    assert.ok(snap.residentBytes > 0);
    assert.equal(snap.maxProcesses, 64);
    assert.equal(snap.maxOpenFiles, 1024);
    assert.deepEqual(snap.mounts, []);
    const clone = hv.Sandbox.fromSnapshot(snap, { timeoutMs: 5000 });
    try {
      assert.equal((await clone.run(['echo', 'resumed'], { encoding: 'utf8' })).stdout, 'resumed\n');
      assert.equal((await clone.run(snap.args, { encoding: 'utf8' })).stdout, 'taken\n');
      await clone.warm();
      assert.equal(clone.poisoned, false);
      // A snapshot sandbox's runs resume: no program, so no image.
      await assert.rejects(clone.run(['x'], { image: Buffer.from('x') }), TypeError);
    } finally {
      await clone.close();
    }
    // A snapshot's memory is its own: another size is refused.
    assert.throws(() => hv.Sandbox.fromSnapshot(snap, { memory: '128M' }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
    assert.throws(() => hv.Sandbox.fromSnapshot({}), TypeError);
  } finally {
    await sb.close();
  }
});

test('a checkpoint snapshot, saved and loaded, with stdin and arguments per run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hvsandbox-node-'));
  const sb = new hv.Sandbox();
  try {
    const snap = await sb.snapshot(sh(CHECKPOINT));
    assert.equal(snap.point, 'checkpoint');
    const file = join(dir, 'sh.snap');
    await snap.save(file);
    const loaded = await hv.Snapshot.load(file);
    assert.equal(loaded.point, 'checkpoint');
    // Its VMs copy its memory: they run the same.
    loaded.copyMemory();
    assert.throws(() => loaded.copyMemory('yes'), TypeError);
    for (const s of [snap, loaded]) {
      const clone = hv.Sandbox.fromSnapshot(s);
      try {
        const r = await clone.run(['a', 'b'], { input: 'in\n', encoding: 'utf8' });
        assert.equal(r.stdout, 'args: a b \nin\n');
        // A run of a snapshot sandbox without arguments.
        assert.equal((await clone.run({ encoding: 'utf8' })).stdout, 'args: \n');
        // Live too.
        const p = clone.spawn(['live'], { encoding: 'utf8' });
        p.stdin.end('typed\n');
        assert.equal((await p.wait()).stdout, 'args: live \ntyped\n');
      } finally {
        await clone.close();
      }
    }
    await assert.rejects(snap.save(join(dir, 'no/such/dir/x.snap')), hv.SandboxError);
  } finally {
    await sb.close();
    rmSync(dir, { recursive: true });
  }
});

test('a snapshot that is never reached fails with SNAPSHOT_INVALID', async () => {
  const sb = new hv.Sandbox();
  try {
    await assert.rejects(sb.snapshot([BUSYBOX, 'true'], { at: 'checkpoint' }), (e) => {
      assert.ok(e instanceof hv.SnapshotInvalidError);
      return true;
    });
    await assert.rejects(sb.snapshot([BUSYBOX, 'true'], { at: 'middle' }), TypeError);
  } finally {
    await sb.close();
  }
});

test('a pool: many runs in flight, loans, callbacks, abort', async () => {
  const sb = new hv.Sandbox();
  const snap = await sb.snapshot(sh(CHECKPOINT));
  await sb.close();
  const pool = new hv.SandboxPool(snap, { size: 3, timeoutMs: 30000 });
  try {
    assert.equal(pool.size, 3);
    assert.ok(pool.ready >= 1);
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.run([String(i)], { input: `${i}\n`, encoding: 'utf8' })));
    assert.deepEqual(rs.map((r) => r.stdout), Array.from({ length: 20 }, (_, i) => `args: ${i} \n${i}\n`));

    const loan = await pool.acquire();
    assert.equal((await loan.run(['x'], { encoding: 'utf8' })).stdout, 'args: x \n');
    await loan.close(); // back to the pool

    const chunks = [];
    const r = await pool.run(['cb'], { input: 'z\n', onStdout: (c) => chunks.push(c.toString()) });
    assert.equal(chunks.join(''), 'args: cb \nz\n');
    assert.equal(r.stdout.toString(), 'args: cb \nz\n');

    const ac = new AbortController();
    const aborted = pool.run(['a'], { signal: ac.signal });
    ac.abort();
    // (The run may have ended before the abort reached it.)
    await aborted.then((res) => assert.equal(res.exitCode, 0), (e) => assert.equal(e.code, 'ERR_HVSANDBOX_ABORTED'));
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.run(['x']), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
  assert.throws(() => new hv.SandboxPool(snap, { size: 0 }), TypeError);
  assert.throws(() => new hv.SandboxPool(snap, { size: 2000 }), { code: 'ERR_HVSANDBOX_INVALID_CONFIG' });
});
