// Shared by the tests: busybox, and guest C programs of the Rust tests
// (tests/guest-programs, tests/hostile) built with musl-gcc on demand.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BUSYBOX = '/bin/busybox';
export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** `busybox sh -c script` as args. */
export const sh = (script) => [BUSYBOX, 'sh', '-c', script];

/** Builds tests/<rel>.c (musl, static) once; returns the binary's path. */
export function guestProgram(rel) {
  const src = join(REPO, 'tests', `${rel}.c`);
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'hvsandbox-node-tests');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `${rel.replace(/\//g, '_')}-${hash}`);
  if (!existsSync(out)) {
    const tmp = `${out}.tmp${process.pid}`;
    execFileSync('musl-gcc', ['-static', '-O2', '-o', tmp, src]);
    renameSync(tmp, out);
  }
  return out;
}

/** Resolves once `cond()` holds, checking at each turn of the event loop. */
export async function until(cond) {
  while (!cond()) await new Promise((r) => setImmediate(r));
}
