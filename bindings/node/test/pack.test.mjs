// `npm pack` makes a tarball that installs into an empty directory with
// no network (--offline, an empty cache) and works from CommonJS and ESM.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..');

test('npm pack → npm install --offline → require and import', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hvsandbox-pack-'));
  try {
    const [info] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: pkgDir, encoding: 'utf8' }));
    const files = info.files.map((f) => f.path).sort();
    assert.deepEqual(files, [
      'README.md', 'hvsandbox.linux-x64-gnu.node', 'index.d.ts', 'index.js', 'lib/error-classes.js', 'lib/errors.js',
      'lib/native.js', 'lib/options.js', 'lib/process.js', 'package.json',
    ]);
    const app = join(dir, 'app');
    execFileSync('mkdir', [app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--cache', join(dir, 'empty-cache'), join(dir, info.filename)], {
      cwd: app, encoding: 'utf8', env: { ...process.env, npm_config_registry: 'http://127.0.0.1:9/' },
    });
    const cjs = "require('hvsandbox').run(['/bin/busybox', 'echo', 'cjs'], { encoding: 'utf8' }).then((r) => process.stdout.write(r.stdout))";
    assert.equal(execFileSync(process.execPath, ['-e', cjs], { cwd: app, encoding: 'utf8' }), 'cjs\n');
    const esm = "import { Sandbox, TimeoutError } from 'hvsandbox'; if (typeof TimeoutError !== 'function') throw new Error('no TimeoutError'); const sb = new Sandbox(); const r = await sb.run(['/bin/busybox', 'echo', 'esm'], { encoding: 'utf8' }); await sb.close(); process.stdout.write(r.stdout);";
    assert.equal(execFileSync(process.execPath, ['--input-type=module', '-e', esm], { cwd: app, encoding: 'utf8' }), 'esm\n');
  } finally {
    rmSync(dir, { recursive: true });
  }
});
