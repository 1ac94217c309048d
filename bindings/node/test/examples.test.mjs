// The examples: examples/node_demo.mjs runs as the README shows it, and the
// HTTP service of examples/node/ answers ordinary and hostile scripts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

import { REPO } from './helpers.mjs';

test('examples/node_demo.mjs', () => {
  const out = execFileSync(process.execPath, [join(REPO, 'examples', 'node_demo.mjs')], { encoding: 'utf8' });
  assert.equal(out, [
    'wc -l: 2 (exit 0, 25 syscalls)',
    'ERR_HVSANDBOX_TIMEOUT: printed "working\\n"',
    '> name?',
    '> hi ada',
    'exit 0',
    'clone 1, clone 2, clone 3',
    '',
  ].join('\n').replace('25 syscalls', out.match(/\d+ syscalls/)[0]));
});

test('examples/node/server.mjs: scripts in, JSON out; hostile scripts are contained', async () => {
  const { start } = await import(join(REPO, 'examples', 'node', 'server.mjs'));
  const { server, pool, url } = await start({ poolSize: 2 });
  const post = async (script) => {
    const res = await fetch(`${url}/run`, { method: 'POST', body: script });
    return [res.status, await res.json()];
  };
  try {
    let [status, body] = await post('echo hello; echo oops >&2; exit 3');
    assert.equal(status, 200);
    assert.deepEqual([body.exitCode, body.stdout, body.stderr, body.truncated], [3, 'hello\n', 'oops\n', false]);

    // Several at once.
    const many = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => post(`echo $((${i} * 7))`)));
    assert.deepEqual(many.map(([s, b]) => [s, b.stdout]), [1, 2, 3, 4, 5, 6].map((i) => [200, `${i * 7}\n`]));

    // An infinite loop: stopped by the CPU-time limit.
    [status, body] = await post('echo spinning; while :; do :; done');
    assert.equal(status, 422);
    assert.equal(body.error.code, 'ERR_HVSANDBOX_TIMEOUT');
    assert.equal(body.stdout, 'spinning\n');

    // A memory bomb: the shell runs out of the sandbox's memory, not ours.
    [status, body] = await post('x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done');
    // (On a slow or loaded host its CPU-time limit may come first.)
    if (status === 200) {
      assert.notEqual(body.exitCode, 0);
      assert.match(body.stderr, /out of memory/);
    } else {
      assert.equal(status, 422, JSON.stringify(body).slice(0, 300));
      assert.ok(['ERR_HVSANDBOX_TIMEOUT', 'ERR_HVSANDBOX_MEMORY_LIMIT'].includes(body.error.code), body.error.code);
    }

    // An output flood: cut at maxOutput.
    [status, body] = await post('yes flood');
    assert.ok(status === 200 || body.error.code === 'ERR_HVSANDBOX_TIMEOUT', JSON.stringify(body).slice(0, 200));
    if (status === 200) {
      assert.equal(body.truncated, true);
      assert.equal(body.stdout.length, 64 * 1024);
    }

    // A fork bomb: bounded by the guest's process limit.
    [status, body] = await post('f() { f | f & }; f; sleep 0.2; echo survived');
    assert.ok([200, 422].includes(status));

    // The service still answers.
    [status, body] = await post('echo still here');
    assert.deepEqual([status, body.stdout], [200, 'still here\n']);
    [status] = await post('x'.repeat(70 * 1024));
    assert.equal(status, 413);
  } finally {
    await new Promise((r) => server.close(r));
    await pool.close();
  }
});

test("the README's Node section runs as written", async () => {
  const { readFileSync, writeFileSync, rmSync } = await import('node:fs');
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Node\n'));
  const code = section.match(/```js\n([\s\S]*?)```/)[1];
  // Inside the package, so `import ... from 'hvsandbox'` resolves to it.
  const file = join(REPO, 'bindings', 'node', 'test', '.readme-snippet.mjs');
  writeFileSync(file, `${code}\nawait pool.close();\nconsole.log('readme ok');\n`);
  try {
    const out = execFileSync(process.execPath, [file], { encoding: 'utf8' });
    assert.match(out, /readme ok\n$/);
  } finally {
    rmSync(file, { force: true });
  }
});
