'use strict';
// hvsandbox for Node: run untrusted Linux programs in KVM micro-VMs.
//
// The JavaScript API over the native addon (src/, Rust): lib/options.js
// checks options (a wrong type or an unknown name is a TypeError),
// lib/errors.js turns the addon's error objects into Error subclasses with
// a stable `code`, lib/process.js gives spawned processes Node streams;
// this file has the classes. All blocking work happens on the addon's
// threads; nothing here waits.

const native = require('./lib/native');
const { callNative, decode, unwrap } = require('./lib/errors');
const { InvalidConfigError } = require('./lib/error-classes');
const {
  typeError, checkKeys, str, bytes, int, SANDBOX_OPTIONS, RUN_OPTIONS, SPAWN_OPTIONS, SNAPSHOT_OPTIONS,
  sandboxConfig, commandOf, objectCommand, checkSignal, checkEncoding, checkCallback, splitOptions, settle, runArgs,
} = require('./lib/options');
const { SandboxProcess } = require('./lib/process');

// ---------------------------------------------------------------- snapshots

const INTERNAL = Symbol('hvsandbox.internal');

/**
 * A frozen program (`Sandbox.snapshot`): start sandboxes from it
 * (`Sandbox.fromSnapshot`, `SandboxPool`), save it, load it.
 */
class Snapshot {
  #native;
  #info = null;

  constructor(token, n) {
    if (token !== INTERNAL) throw typeError('Snapshot: use sandbox.snapshot() or Snapshot.load()');
    this.#native = n;
  }

  static _native(s) {
    if (!(s instanceof Snapshot)) throw typeError('expected a Snapshot');
    return s.#native;
  }

  #get() {
    if (!this.#info) this.#info = this.#native.info();
    return this.#info;
  }

  /** 'checkpoint' or 'entry'. */
  get point() { return this.#get().point; }
  get memoryBytes() { return this.#get().memoryBytes; }
  get residentBytes() { return this.#get().residentBytes; }
  get maxProcesses() { return this.#get().maxProcesses; }
  get maxOpenFiles() { return this.#get().maxOpenFiles; }
  /** The arguments (after argv[0]) its program was started with. */
  get args() { return [...this.#get().args]; }
  /** The environment its program was started with. */
  get env() { return Object.fromEntries(this.#get().env.map((e) => [e.key, e.value])); }
  /** Its read-only mounts: [{ host, guest }]. */
  get mounts() { return this.#get().mounts.map((m) => ({ host: m.host, guest: m.guest })); }

  /**
   * Whether VMs made from now on for this snapshot get their own copy of
   * its memory instead of sharing it copy-on-write (default: share).
   */
  copyMemory(copy = true) {
    if (typeof copy !== 'boolean') throw typeError('Snapshot.copyMemory: copy must be a boolean');
    this.#native.copyMemory(copy);
  }

  /** Writes the snapshot to a file (streamed, off the main thread). */
  async save(path) {
    str(path, 'Snapshot.save: path');
    unwrap(await callNative(() => this.#native.save(path)));
  }

  /** Reads a snapshot file written by save() (checked: untrusted input). */
  static async load(path) {
    str(path, 'Snapshot.load: path');
    return new Snapshot(INTERNAL, unwrap(await callNative(() => native.NativeSnapshot.load(path))));
  }

  /** A snapshot from the bytes of a snapshot file. */
  static async fromBytes(data) {
    const data_ = bytes(data, 'Snapshot.fromBytes: data');
    return new Snapshot(INTERNAL, unwrap(await callNative(() => native.NativeSnapshot.fromBytes(data_))));
  }
}

// ---------------------------------------------------------------- sandboxes

const DEFAULT_MAX_OUTPUT = 1 << 20;

/**
 * A sandbox: runs programs one at a time, each in a fresh micro-VM (or,
 * built from a snapshot, each from the snapshot). Runs queue in order.
 */
class Sandbox {
  #native;
  #resume;
  #maxOutput;
  #closed = null;

  /** Builds a sandbox (sub-millisecond: its VM was made ahead). */
  constructor(opts = {}) {
    if (opts === INTERNAL) return; // from fromSnapshot / SandboxPool.acquire
    checkKeys(opts, SANDBOX_OPTIONS, 'new Sandbox()');
    const cfg = sandboxConfig(opts, 'new Sandbox()');
    this.#init(unwrap(callNative(() => native.createSandbox(cfg, null))), false, cfg.maxOutput);
  }

  #init(n, resume, maxOutput) {
    this.#native = n;
    this.#resume = resume;
    this.#maxOutput = maxOutput ?? DEFAULT_MAX_OUTPUT;
  }

  static _wrap(n, resume, maxOutput) {
    const sb = new Sandbox(INTERNAL);
    sb.#init(n, resume, maxOutput);
    return sb;
  }

  /**
   * A sandbox whose runs start from `snapshot`: `run(args)` resumes it
   * with `args` (an entry snapshot's argv after argv[0]; a checkpoint
   * snapshot's read of /dev/hvsandbox/checkpoint). Memory, maxProcesses and
   * maxOpenFiles are the snapshot's; give its mounts again.
   */
  static fromSnapshot(snapshot, opts = {}) {
    checkKeys(opts, SANDBOX_OPTIONS, 'Sandbox.fromSnapshot()');
    const cfg = sandboxConfig(opts, 'Sandbox.fromSnapshot()');
    const n = Snapshot._native(snapshot);
    return Sandbox._wrap(unwrap(callNative(() => native.createSandbox(cfg, n))), true, cfg.maxOutput);
  }

  #check(where) {
    if (this.#closed) {
      throw new InvalidConfigError(`hvsandbox: ${where}: the sandbox is closed`);
    }
  }

  /**
   * Runs a program to completion: resolves to { exitCode, signal, stdout,
   * stderr, truncated, stats, ... } (a non-zero exit is a result, not an
   * error); rejects with a SandboxError when the run did not complete.
   */
  run(args, opts) {
    // Not an async function (a promise layer fewer per call): a bad
    // argument still rejects rather than throws.
    try {
      return this.#run(args, opts);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #run(args, opts) {
    let cmd;
    let signal;
    let encoding;
    ({ cmd, opts, signal, encoding } = runArgs(args, opts, RUN_OPTIONS, 'Sandbox.run()', this.#resume));
    const onStdout = checkCallback(opts.onStdout, 'Sandbox.run(): onStdout');
    const onStderr = checkCallback(opts.onStderr, 'Sandbox.run(): onStderr');
    this.#check('run');
    if (onStdout || onStderr) {
      cmd = objectCommand(cmd);
      if (cmd.collect) throw typeError('Sandbox.run(): collect cannot be combined with onStdout/onStderr');
      // Streamed: a spawn whose stdin is the given input (or none).
      if (!cmd.stdin) cmd.stdin = Buffer.alloc(0);
      const p = this.#spawn(cmd, { encoding, signal, onChunk: (stream, data) => {
        const cb = stream === 'stdout' ? onStdout : onStderr;
        if (cb) cb(decode(data, encoding));
      } });
      p.stdout.resume();
      p.stderr.resume();
      return p.wait();
    }
    return settle((cancel) => this.#native.run(cmd, cancel), { signal, encoding });
  }

  #spawn(cmd, { encoding, signal, onChunk }) {
    const n = this.#native;
    return new SandboxProcess((onEvent) => n.spawn(cmd, onEvent), {
      maxOutput: this.#maxOutput, encoding, signal, onChunk,
    });
  }

  /**
   * Starts a program and returns at once: a SandboxProcess with stdout and
   * stderr streams, a stdin stream, wait() and kill(). The sandbox runs
   * nothing else until it ends (other calls fail with ERR_HVSANDBOX_BUSY).
   */
  spawn(args, opts) {
    const { cmd, signal, encoding } = runArgs(args, opts, SPAWN_OPTIONS, 'Sandbox.spawn()', this.#resume);
    this.#check('spawn');
    return this.#spawn(cmd, { encoding, signal });
  }

  /**
   * Runs a program up to its snapshot point — `at: 'checkpoint'` (default:
   * where it reads /dev/hvsandbox/checkpoint) or `'entry'` — and freezes it.
   */
  async snapshot(args, opts) {
    checkKeys(opts, SNAPSHOT_OPTIONS, 'Sandbox.snapshot()');
    opts = opts || {};
    const cmd = commandOf(args, opts, 'Sandbox.snapshot()', false);
    const at = opts.at ?? 'checkpoint';
    if (at !== 'checkpoint' && at !== 'entry') {
      throw typeError(`Sandbox.snapshot(): at must be 'checkpoint' or 'entry', got ${JSON.stringify(at)}`);
    }
    this.#check('snapshot');
    return new Snapshot(INTERNAL, unwrap(await callNative(() => this.#native.snapshot(cmd, at))));
  }

  /** For a sandbox built from a snapshot: makes its next VM now. */
  async warm() {
    this.#check('warm');
    unwrap(await callNative(() => this.#native.warm()));
  }

  /** Whether an earlier failure made the sandbox unusable (null while a run holds it). */
  get poisoned() {
    return this.#native.poisoned() ?? null;
  }

  get closed() {
    return this.#closed !== null;
  }

  /**
   * Stops what runs (pending runs reject with ERR_HVSANDBOX_ABORTED), then
   * frees the sandbox; a pooled one goes back to its pool. Idempotent.
   */
  close() {
    if (!this.#closed) this.#closed = callNative(() => this.#native.close()).then(() => undefined);
    return this.#closed;
  }

  [Symbol.asyncDispose]() {
    return this.close();
  }
}

/** One run in a sandbox of its own: `run(args, { timeoutMs, memory, input, ... })`. */
async function run(args, opts) {
  const [sbOpts, runOpts] = splitOptions(opts, [...SANDBOX_OPTIONS, ...RUN_OPTIONS], 'run()');
  if (runOpts.onStdout !== undefined || runOpts.onStderr !== undefined) {
    const sb = new Sandbox(sbOpts);
    try {
      return await sb.run(args, runOpts);
    } finally {
      await sb.close();
    }
  }
  const cmd = commandOf(args, runOpts, 'run()', false);
  const cfg = sandboxConfig(sbOpts, 'run()');
  const signal = checkSignal(runOpts.signal, 'run()');
  const encoding = checkEncoding(runOpts.encoding, 'run()');
  return settle((cancel) => native.runOnce(cfg, cmd, cancel), { signal, encoding });
}

// ---------------------------------------------------------------- pools

/**
 * Keeps `size` warm sandboxes of a snapshot ready (refilled in the
 * background): `run()` takes one, runs, gives it back.
 */
class SandboxPool {
  #native;
  #maxOutput;
  #closed = null;

  constructor(snapshot, opts = {}) {
    checkKeys(opts, ['size', ...SANDBOX_OPTIONS], 'new SandboxPool()');
    const size = opts.size === undefined ? 4 : int(opts.size, 'new SandboxPool(): size', 1);
    const { size: _s, ...rest } = opts;
    const cfg = sandboxConfig(rest, 'new SandboxPool()');
    const n = Snapshot._native(snapshot);
    this.#native = unwrap(callNative(() => native.createPool(cfg, n, size)));
    this.#maxOutput = cfg.maxOutput;
  }

  #check(where) {
    if (this.#closed) throw new InvalidConfigError(`hvsandbox: SandboxPool.${where}: the pool is closed`);
  }

  /** Runs in a pooled sandbox (resuming the snapshot with `args`). */
  run(args, opts) {
    // Not an async function, as Sandbox.run.
    try {
      const { cmd, opts: o, signal, encoding } = runArgs(args, opts, RUN_OPTIONS, 'SandboxPool.run()', true);
      this.#check('run');
      if (o.onStdout !== undefined || o.onStderr !== undefined) return this.#streamed(args, opts);
      return settle((cancel) => this.#native.run(cmd, cancel), { signal, encoding });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async #streamed(args, opts) {
    const sb = await this.acquire();
    try {
      return await sb.run(args, opts);
    } finally {
      await sb.close();
    }
  }

  /** A sandbox on loan: use it, then `close()` it to give it back. */
  async acquire() {
    this.#check('acquire');
    return Sandbox._wrap(unwrap(await callNative(() => this.#native.acquire())), true, this.#maxOutput);
  }

  /** Sandboxes ready now. */
  get ready() { return this.#native.ready(); }
  /** The pool's target size. */
  get size() { return this.#native.size(); }

  /** Stops refilling and frees the ready sandboxes. Idempotent. */
  close() {
    if (!this.#closed) this.#closed = callNative(() => this.#native.close()).then(() => undefined);
    return this.#closed;
  }

  [Symbol.asyncDispose]() {
    return this.close();
  }
}

module.exports = {
  run,
  Sandbox,
  SandboxProcess,
  Snapshot,
  SandboxPool,
  ...require('./lib/error-classes'),
};
