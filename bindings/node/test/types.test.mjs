// index.d.ts matches the API: a usage file compiles under --strict, and
// every runtime export is declared (and every declared value exported).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as hv from '../index.js';

const here = dirname(fileURLToPath(import.meta.url));

test('test/usage.ts compiles against index.d.ts (tsc --noEmit --strict)', () => {
  const tsc = join(here, '..', 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
});

test('index.d.ts declares exactly the exported values', () => {
  const dts = readFileSync(join(here, '..', 'index.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  const exported = Object.keys(hv).filter((k) => k !== 'default' && k !== 'module.exports').sort();
  assert.deepEqual(declared, exported);
});
