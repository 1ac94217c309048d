'use strict';
// hvsandbox for Node: run untrusted Linux programs in KVM micro-VMs.
//
// This file is the JavaScript API over the native addon (src/, Rust): it
// checks options (a wrong type or an unknown name is a TypeError), turns
// the addon's plain error objects into Error subclasses with a stable
// `code`, wires AbortSignal to per-run cancels, and gives spawned processes
// Node streams. All blocking work happens on the addon's threads; nothing
// here waits.

const { Readable, Writable } = require('node:stream');
const os = require('node:os');

function loadNative() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `hvsandbox runs on Linux x86-64 with KVM only (this is ${process.platform}-${process.arch})`,
    );
  }
  return require('./hvsandbox.linux-x64-gnu.node');
}

const native = loadNative();

// ---------------------------------------------------------------- errors

/** Rust `ErrorKind::code()` → the Node `code` and the Error subclass name. */
const KINDS = {
  TIMEOUT: ['ERR_HVSANDBOX_TIMEOUT', 'TimeoutError'],
  CANCELLED: ['ERR_HVSANDBOX_ABORTED', 'AbortError'],
  MEMORY_LIMIT_EXCEEDED: ['ERR_HVSANDBOX_MEMORY_LIMIT', 'MemoryLimitError'],
  OUTPUT_LIMIT_EXCEEDED: ['ERR_HVSANDBOX_OUTPUT_LIMIT', 'OutputLimitError'],
  GUEST_CRASHED: ['ERR_HVSANDBOX_GUEST_CRASHED', 'GuestCrashedError'],
  INVALID_PROGRAM: ['ERR_HVSANDBOX_INVALID_PROGRAM', 'InvalidProgramError'],
  INVALID_CONFIG: ['ERR_HVSANDBOX_INVALID_CONFIG', 'InvalidConfigError'],
  KVM_UNAVAILABLE: ['ERR_HVSANDBOX_KVM_UNAVAILABLE', 'KvmUnavailableError'],
  SANDBOX_POISONED: ['ERR_HVSANDBOX_POISONED', 'SandboxPoisonedError'],
  SANDBOX_BUSY: ['ERR_HVSANDBOX_BUSY', 'SandboxBusyError'],
  JAIL_VIOLATION: ['ERR_HVSANDBOX_JAIL_VIOLATION', 'JailViolationError'],
  SNAPSHOT_INVALID: ['ERR_HVSANDBOX_SNAPSHOT_INVALID', 'SnapshotInvalidError'],
  INTERNAL: ['ERR_HVSANDBOX_INTERNAL', 'InternalError'],
};

/** Every hvsandbox failure: `code` is stable, `kind` is the Rust kind's code. */
class SandboxError extends Error {
  constructor(message, kind = 'INTERNAL', details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    const [code] = KINDS[kind] || KINDS.INTERNAL;
    this.code = code;
    this.kind = kind;
    for (const k of ['stdout', 'stderr', 'cpu', 'limit', 'stream', 'program', 'syscall']) {
      if (details[k] !== undefined && details[k] !== null) this[k] = details[k];
    }
  }
}
Object.defineProperty(SandboxError.prototype, 'name', { value: 'SandboxError', writable: true });

const errorClasses = { SandboxError };
for (const [kind, [, name]] of Object.entries(KINDS)) {
  const cls = {
    [name]: class extends SandboxError {
      constructor(message, details) {
        super(message, kind, details);
      }
    },
  }[name];
  Object.defineProperty(cls.prototype, 'name', { value: name, writable: true });
  errorClasses[name] = cls;
}

/** `code` by Rust kind, for `switch (err.code)` without string typos. */
const ErrorCodes = Object.freeze(
  Object.fromEntries(Object.entries(KINDS).map(([kind, [code]]) => [kind, code])),
);

function isRawError(v) {
  return v !== null && typeof v === 'object' && typeof v.kind === 'string' && typeof v.message === 'string';
}

function decode(buf, encoding) {
  if (buf === undefined || buf === null) return buf;
  return encoding ? buf.toString(encoding) : buf;
}

/** An Error for a native error object; `extra` adds output taken by streams. */
function toError(raw, { encoding, cause, taken } = {}) {
  let { stdout, stderr } = raw;
  if (taken && stdout) stdout = Buffer.concat([taken.stdout, stdout]);
  if (taken && stderr) stderr = Buffer.concat([taken.stderr, stderr]);
  const [, name] = KINDS[raw.kind] || KINDS.INTERNAL;
  return new errorClasses[name](`hvsandbox: ${raw.message}`, {
    stdout: decode(stdout, encoding),
    stderr: decode(stderr, encoding),
    cpu: raw.cpu,
    limit: raw.limit,
    stream: raw.stream,
    program: raw.program,
    syscall: raw.syscall,
    cause,
  });
}

/** Whatever the addon threw (it should not) as an INTERNAL SandboxError. */
function internal(e) {
  if (e instanceof SandboxError || e instanceof TypeError) return e;
  return new errorClasses.InternalError(`hvsandbox: ${e && e.message ? e.message : String(e)}`, { cause: e });
}

function callNative(fn) {
  try {
    return fn();
  } catch (e) {
    throw internal(e);
  }
}

function abortError(signal, partial, encoding) {
  return new errorClasses.AbortError('hvsandbox: the run was aborted', {
    stdout: decode(partial ? partial.stdout : Buffer.alloc(0), encoding),
    stderr: decode(partial ? partial.stderr : Buffer.alloc(0), encoding),
    cause: signal ? signal.reason : undefined,
  });
}

// ---------------------------------------------------------------- options

function typeError(msg) {
  const e = new TypeError(`hvsandbox: ${msg}`);
  e.code = 'ERR_INVALID_ARG_TYPE';
  return e;
}

function checkKeys(opts, allowed, where) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts)) throw typeError(`${where}: options must be an object`);
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) {
      throw typeError(`${where}: unknown option '${k}' (known: ${allowed.join(', ')})`);
    }
  }
  return opts;
}

const SIZE_UNITS = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** A byte count: a whole number, or a string like '64M', '512K', '1GiB'. */
function size(v, name) {
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v) && v >= 0) return v;
  } else if (typeof v === 'string') {
    const m = /^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(v);
    if (m) {
      const n = Number(m[1]) * SIZE_UNITS[m[2].toUpperCase()];
      if (Number.isSafeInteger(n)) return n;
    }
  }
  throw typeError(`${name} must be a whole number of bytes or a size like '64M', got ${JSON.stringify(v)}`);
}

function ms(v, name) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw typeError(`${name} must be a number of milliseconds > 0, got ${JSON.stringify(v)}`);
  }
  return v;
}

function int(v, name, min = 0) {
  if (!Number.isSafeInteger(v) || v < min || v > 0xffffffff) {
    throw typeError(`${name} must be a whole number >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(v, name) {
  if (typeof v !== 'boolean') throw typeError(`${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function str(v, name) {
  if (typeof v !== 'string') throw typeError(`${name} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function bytes(v, name) {
  if (typeof v === 'string') return Buffer.from(v);
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw typeError(`${name} must be a string, Buffer or Uint8Array`);
}

function envList(v, name) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw typeError(`${name} must be an object of strings ({ NAME: 'value' })`);
  }
  return Object.entries(v).map(([key, value]) => ({ key, value: str(value, `${name}.${key}`) }));
}

function fileList(v, name) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw typeError(`${name} must be an object { '/guest/path': contents }`);
  }
  return Object.entries(v).map(([path, f]) => {
    if (f !== null && typeof f === 'object' && !(f instanceof Uint8Array)) {
      checkKeys(f, ['data', 'mode'], `${name}['${path}']`);
      const mode = f.mode === undefined ? undefined : int(f.mode, `${name}['${path}'].mode`);
      return { path, data: bytes(f.data, `${name}['${path}'].data`), mode };
    }
    return { path, data: bytes(f, `${name}['${path}']`) };
  });
}

function mountList(v, name) {
  if (Array.isArray(v)) {
    return v.map((m, i) => {
      checkKeys(m, ['host', 'guest', 'kernelFs'], `${name}[${i}]`);
      return {
        host: str(m.host, `${name}[${i}].host`),
        guest: str(m.guest, `${name}[${i}].guest`),
        kernelFs: m.kernelFs === undefined ? undefined : bool(m.kernelFs, `${name}[${i}].kernelFs`),
      };
    });
  }
  if (v === null || typeof v !== 'object') {
    throw typeError(`${name} must be an object { '/guest/dir': '/host/dir' } or an array of { host, guest }`);
  }
  return Object.entries(v).map(([guest, host]) => ({ host: str(host, `${name}['${guest}']`), guest }));
}

const SANDBOX_OPTIONS = [
  'memory', 'timeoutMs', 'cpuTimeMs', 'maxOutput', 'failOnOutputLimit', 'env', 'mounts', 'files', 'cwd',
  'seccomp', 'maxProcesses', 'maxOpenFiles', 'maxInput', 'maxCollectBytes', 'maxCollectFiles',
];

/** Sandbox options → the addon's config (every key checked). */
function sandboxConfig(o, where) {
  const c = {};
  if (o.memory !== undefined) c.memory = size(o.memory, `${where}: memory`);
  if (o.timeoutMs !== undefined) c.timeoutMs = ms(o.timeoutMs, `${where}: timeoutMs`);
  if (o.cpuTimeMs !== undefined) c.cpuTimeMs = ms(o.cpuTimeMs, `${where}: cpuTimeMs`);
  if (o.maxOutput !== undefined) c.maxOutput = size(o.maxOutput, `${where}: maxOutput`);
  if (o.failOnOutputLimit !== undefined) c.failOnOutputLimit = bool(o.failOnOutputLimit, `${where}: failOnOutputLimit`);
  if (o.env !== undefined) c.env = envList(o.env, `${where}: env`);
  if (o.mounts !== undefined) c.mounts = mountList(o.mounts, `${where}: mounts`);
  if (o.files !== undefined) c.files = fileList(o.files, `${where}: files`);
  if (o.cwd !== undefined) c.cwd = str(o.cwd, `${where}: cwd`);
  if (o.seccomp !== undefined) {
    if (!['enforce', 'log', 'off'].includes(o.seccomp)) {
      throw typeError(`${where}: seccomp must be 'enforce', 'log' or 'off', got ${JSON.stringify(o.seccomp)}`);
    }
    c.seccomp = o.seccomp;
  }
  if (o.maxProcesses !== undefined) c.maxProcesses = int(o.maxProcesses, `${where}: maxProcesses`);
  if (o.maxOpenFiles !== undefined) c.maxOpenFiles = int(o.maxOpenFiles, `${where}: maxOpenFiles`);
  if (o.maxInput !== undefined) c.maxInput = size(o.maxInput, `${where}: maxInput`);
  if (o.maxCollectBytes !== undefined) c.maxCollectBytes = size(o.maxCollectBytes, `${where}: maxCollectBytes`);
  if (o.maxCollectFiles !== undefined) c.maxCollectFiles = int(o.maxCollectFiles, `${where}: maxCollectFiles`);
  return c;
}

const COMMAND_OPTIONS = ['input', 'env', 'envClear', 'files', 'cwd', 'collect', 'image'];
const RUN_OPTIONS = [...COMMAND_OPTIONS, 'signal', 'encoding', 'onStdout', 'onStderr'];
const SPAWN_OPTIONS = [...COMMAND_OPTIONS.filter((k) => k !== 'collect'), 'signal', 'encoding', 'unlimitedStreaming'];
const SNAPSHOT_OPTIONS = [...COMMAND_OPTIONS.filter((k) => k !== 'collect'), 'at'];

/**
 * args and per-run options → the addon's command. `resume`: the sandbox
 * starts from a snapshot, so `args` are the resumed run's arguments.
 */
function commandOf(args, o, where, resume) {
  if (args === undefined && resume) args = [];
  if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) {
    throw typeError(`${where}: args must be an array of strings, e.g. ['/bin/busybox', 'echo', 'hi']`);
  }
  if (!resume && args.length === 0) throw typeError(`${where}: args must name a program (args[0])`);
  const c = resume ? { args } : { program: args[0], args: args.slice(1) };
  if (o.image !== undefined) {
    if (resume) throw typeError(`${where}: image cannot be given to a sandbox built from a snapshot`);
    c.image = bytes(o.image, `${where}: image`);
  }
  if (o.input !== undefined) c.stdin = bytes(o.input, `${where}: input`);
  if (o.env !== undefined) c.env = envList(o.env, `${where}: env`);
  if (o.envClear !== undefined) c.envClear = bool(o.envClear, `${where}: envClear`);
  if (o.files !== undefined) c.files = fileList(o.files, `${where}: files`);
  if (o.cwd !== undefined) c.cwd = str(o.cwd, `${where}: cwd`);
  if (o.collect !== undefined) {
    if (!Array.isArray(o.collect) || o.collect.some((p) => typeof p !== 'string')) {
      throw typeError(`${where}: collect must be an array of guest paths`);
    }
    c.collect = o.collect;
  }
  if (o.unlimitedStreaming !== undefined) c.unlimitedStreaming = bool(o.unlimitedStreaming, `${where}: unlimitedStreaming`);
  return c;
}

function checkSignal(signal, where) {
  if (signal === undefined) return undefined;
  if (signal === null || typeof signal !== 'object' || typeof signal.aborted !== 'boolean' ||
      typeof signal.addEventListener !== 'function') {
    throw typeError(`${where}: signal must be an AbortSignal`);
  }
  return signal;
}

function checkEncoding(encoding, where) {
  if (encoding === undefined || encoding === null || encoding === 'buffer') return undefined;
  if (typeof encoding !== 'string' || !Buffer.isEncoding(encoding)) {
    throw typeError(`${where}: encoding must be a Buffer encoding such as 'utf8', got ${JSON.stringify(encoding)}`);
  }
  return encoding;
}

function checkCallback(f, name) {
  if (f !== undefined && typeof f !== 'function') throw typeError(`${name} must be a function`);
  return f;
}

/** Splits run()'s options between the sandbox and the run. */
function splitOptions(opts, allowed, where) {
  checkKeys(opts, allowed, where);
  const sb = {};
  const cmd = {};
  for (const [k, v] of Object.entries(opts || {})) {
    if (SANDBOX_OPTIONS.includes(k) && !['env', 'files', 'cwd'].includes(k)) sb[k] = v;
    else cmd[k] = v;
  }
  return [sb, cmd];
}

// ---------------------------------------------------------------- results

const SIGNAL_NAMES = Object.fromEntries(Object.entries(os.constants.signals).map(([name, n]) => [n, name]));

function signalName(n) {
  return n === null || n === undefined ? null : SIGNAL_NAMES[n] || `SIG${n}`;
}

function statsOf(s) {
  const unknownSyscalls = {};
  for (let i = 0; i + 1 < s.unknownSyscalls.length; i += 2) unknownSyscalls[s.unknownSyscalls[i]] = s.unknownSyscalls[i + 1];
  return {
    wallMs: s.wallMs,
    cpuMs: s.cpuMs,
    exits: s.exits,
    syscalls: s.syscalls,
    memoryUsed: s.memoryUsed,
    pageFaults: s.pageFaults,
    processes: s.processes,
    stdoutBytes: s.stdoutBytes,
    stderrBytes: s.stderrBytes,
    unknownSyscalls,
  };
}

function resultOf(raw, encoding, streamed) {
  let { stdout, stderr, stdoutTruncated, stderrTruncated } = raw;
  if (streamed) {
    stdout = Buffer.concat([streamed.stdout, stdout]);
    stderr = Buffer.concat([streamed.stderr, stderr]);
    stdoutTruncated = stdoutTruncated || streamed.stdoutTruncated;
    stderrTruncated = stderrTruncated || streamed.stderrTruncated;
  }
  const files = {};
  for (const f of raw.files) files[f.path] = decode(f.data, encoding);
  return {
    exitCode: raw.exitCode ?? null,
    signal: signalName(raw.signal),
    stdout: decode(stdout, encoding),
    stderr: decode(stderr, encoding),
    truncated: stdoutTruncated || stderrTruncated,
    stdoutTruncated,
    stderrTruncated,
    fault: raw.fault
      ? { vector: raw.fault.vector, errorCode: raw.fault.errorCode, rip: raw.fault.rip, address: raw.fault.address ?? null }
      : null,
    files,
    filesTruncated: raw.filesTruncated,
    stats: statsOf(raw.stats),
  };
}

/**
 * Awaits a native run promise with `signal` wired to `cancel`; resolves to
 * the result or rejects with a SandboxError (an AbortError when `signal`
 * aborted it).
 */
async function settle(start, { signal, encoding }) {
  if (signal && signal.aborted) throw abortError(signal, null, encoding);
  const cancel = new native.NativeCancel();
  const onAbort = () => cancel.cancel();
  if (signal) signal.addEventListener('abort', onAbort, { once: true });
  try {
    const raw = await callNative(() => start(cancel));
    if (isRawError(raw)) throw toError(raw, { encoding, cause: signal && signal.aborted ? signal.reason : undefined });
    return resultOf(raw, encoding);
  } finally {
    if (signal) signal.removeEventListener('abort', onAbort);
  }
}

// ---------------------------------------------------------------- processes

const STREAM_HWM_MAX = 16 << 20;

/**
 * A program running in a sandbox (`Sandbox.spawn`): `stdout`/`stderr` are
 * Readable streams (async-iterable) of what it writes as it writes it,
 * `stdin` a Writable it reads from; `wait()` resolves with its result.
 */
class SandboxProcess {
  #native = null;
  #ready;
  #killed = false;
  #ended = false;
  #paused = { stdout: false, stderr: false };
  #collected = { stdout: [], stderr: [], stdoutBytes: 0, stderrBytes: 0 };
  #maxOutput;
  #encoding;
  #done;
  #stdinTouched = false;
  #onChunk;

  constructor(start, { maxOutput, encoding, signal, onChunk }) {
    this.#maxOutput = maxOutput;
    this.#encoding = encoding;
    this.#onChunk = onChunk;
    const hwm = Math.min(Math.max(maxOutput, 64 * 1024), STREAM_HWM_MAX);
    const proc = this;
    this.stdout = new Readable({ highWaterMark: hwm, read() { proc.#resume('stdout'); } });
    this.stderr = new Readable({ highWaterMark: hwm, read() { proc.#resume('stderr'); } });
    if (encoding) {
      this.stdout.setEncoding(encoding);
      this.stderr.setEncoding(encoding);
    }
    this.stdin = new Writable({
      write(chunk, _enc, cb) { proc.#write(chunk, cb); },
      final(cb) { proc.#closeStdin(cb); },
      destroy(err, cb) { proc.#closeStdin(() => cb(err)); },
    });
    this.exitCode = null;
    this.signalCode = null;

    let resolve;
    let reject;
    this.#done = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.#done.catch(() => {}); // rejections are wait()'s; never unhandled here
    const onAbort = () => this.kill();
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    const finish = (err, value) => {
      if (signal) signal.removeEventListener('abort', onAbort);
      this.#ended = true;
      this.stdout.push(null);
      this.stderr.push(null);
      if (err) reject(err);
      else resolve(value);
    };
    // Started now, not in a later tick: calls on the sandbox keep their order.
    let started;
    try {
      started = Promise.resolve(start((ev) => this.#event(ev, finish, signal)));
    } catch (e) {
      started = Promise.reject(e);
    }
    this.#ready = started
      .then((r) => {
        if (isRawError(r)) throw toError(r, { encoding });
        this.#native = r;
        if (this.#killed) r.kill();
        else if (this.#paused.stdout || this.#paused.stderr) r.setPaused(true);
        return r;
      })
      .catch((e) => {
        finish(signal && signal.aborted ? abortError(signal, null, encoding) : internal(e));
        return null;
      });
    if (signal && signal.aborted) this.kill();
  }

  #event(ev, finish, signal) {
    try {
      if (ev.kind === 'exit') {
        const taken = {
          stdout: Buffer.concat(this.#collected.stdout),
          stderr: Buffer.concat(this.#collected.stderr),
          stdoutTruncated: this.#collected.stdoutTruncated || false,
          stderrTruncated: this.#collected.stderrTruncated || false,
        };
        if (ev.error) {
          const aborted = signal && signal.aborted;
          finish(toError(ev.error, { encoding: this.#encoding, cause: aborted ? signal.reason : undefined, taken }));
        } else {
          const result = resultOf(ev.output, this.#encoding, taken);
          this.exitCode = result.exitCode;
          this.signalCode = result.signal;
          finish(null, result);
        }
        return;
      }
      const stream = ev.kind;
      this.#collect(stream, ev.data);
      if (this.#onChunk) this.#onChunk(stream, ev.data);
      if (!this[stream].destroyed && !this[stream].push(ev.data)) {
        this.#paused[stream] = true;
        if (this.#native) this.#native.setPaused(true);
      }
    } catch (e) {
      // A callback of the caller threw: the run stops, wait() rejects
      // with that error.
      this.#failed = e;
      this.kill();
    }
  }

  #failed = undefined;

  #collect(stream, data) {
    const c = this.#collected;
    const room = this.#maxOutput - c[`${stream}Bytes`];
    if (data.length > room) c[`${stream}Truncated`] = true;
    const keep = data.length > room ? data.subarray(0, Math.max(room, 0)) : data;
    if (keep.length) {
      c[stream].push(keep);
      c[`${stream}Bytes`] += keep.length;
    }
  }

  #resume(stream) {
    if (!this.#paused[stream]) return;
    this.#paused[stream] = false;
    if (this.#native && !this.#paused.stdout && !this.#paused.stderr) this.#native.setPaused(false);
  }

  #write(chunk, cb) {
    this.#stdinTouched = true;
    this.#ready.then((n) => {
      // Input after the end goes nowhere, as into a closed pipe whose
      // EPIPE is ignored; wait() tells how the program ended.
      if (!n || this.#ended) return cb();
      n.writeStdin(chunk).then(() => cb(), () => cb());
    });
  }

  #closeStdin(cb) {
    this.#stdinTouched = true;
    this.#ready.then((n) => {
      if (!n) return cb();
      n.closeStdin().then(() => cb(), () => cb());
    });
  }

  /** Stops the program; `wait()` then rejects with an AbortError (ERR_HVSANDBOX_ABORTED). */
  kill() {
    this.#killed = true;
    if (this.#native) this.#native.kill();
  }

  /**
   * Resolves when the program ends, with what `run()` returns: its status,
   * stats and everything it wrote (up to `maxOutput` per stream, whether or
   * not the streams were read). Ends stdin first unless it was written to
   * or ended. Rejects with a SandboxError if the run did not complete.
   */
  async wait() {
    if (!this.#stdinTouched) this.stdin.end();
    try {
      return await this.#done;
    } catch (e) {
      throw this.#failed !== undefined ? this.#failed : e;
    }
  }

  async [Symbol.asyncDispose]() {
    this.kill();
    await this.#done.catch(() => {});
  }
}

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

  /** Writes the snapshot to a file (streamed, off the main thread). */
  async save(path) {
    str(path, 'Snapshot.save: path');
    const r = await callNative(() => this.#native.save(path));
    if (isRawError(r)) throw toError(r);
  }

  /** Reads a snapshot file written by save() (checked: untrusted input). */
  static async load(path) {
    str(path, 'Snapshot.load: path');
    const r = await callNative(() => native.NativeSnapshot.load(path));
    if (isRawError(r)) throw toError(r);
    return new Snapshot(INTERNAL, r);
  }

  /** A snapshot from the bytes of a snapshot file. */
  static async fromBytes(data) {
    const r = await callNative(() => native.NativeSnapshot.fromBytes(bytes(data, 'Snapshot.fromBytes: data')));
    if (isRawError(r)) throw toError(r);
    return new Snapshot(INTERNAL, r);
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
    const r = callNative(() => native.createSandbox(cfg, null));
    if (isRawError(r)) throw toError(r);
    this.#init(r, false, cfg.maxOutput);
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
    const r = callNative(() => native.createSandbox(cfg, n));
    if (isRawError(r)) throw toError(r);
    return Sandbox._wrap(r, true, cfg.maxOutput);
  }

  #check(where) {
    if (this.#closed) {
      throw new errorClasses.InvalidConfigError(`hvsandbox: ${where}: the sandbox is closed`);
    }
  }

  /**
   * Runs a program to completion: resolves to { exitCode, signal, stdout,
   * stderr, truncated, stats, ... } (a non-zero exit is a result, not an
   * error); rejects with a SandboxError when the run did not complete.
   */
  async run(args, opts) {
    if (opts === undefined && args !== null && typeof args === 'object' && !Array.isArray(args)) [args, opts] = [undefined, args];
    checkKeys(opts, RUN_OPTIONS, 'Sandbox.run()');
    opts = opts || {};
    const cmd = commandOf(args, opts, 'Sandbox.run()', this.#resume);
    const signal = checkSignal(opts.signal, 'Sandbox.run()');
    const encoding = checkEncoding(opts.encoding, 'Sandbox.run()');
    const onStdout = checkCallback(opts.onStdout, 'Sandbox.run(): onStdout');
    const onStderr = checkCallback(opts.onStderr, 'Sandbox.run(): onStderr');
    this.#check('run');
    if (onStdout || onStderr) {
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
    if (opts === undefined && args !== null && typeof args === 'object' && !Array.isArray(args)) [args, opts] = [undefined, args];
    checkKeys(opts, SPAWN_OPTIONS, 'Sandbox.spawn()');
    opts = opts || {};
    const cmd = commandOf(args, opts, 'Sandbox.spawn()', this.#resume);
    const signal = checkSignal(opts.signal, 'Sandbox.spawn()');
    const encoding = checkEncoding(opts.encoding, 'Sandbox.spawn()');
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
    const r = await callNative(() => this.#native.snapshot(cmd, at));
    if (isRawError(r)) throw toError(r);
    return new Snapshot(INTERNAL, r);
  }

  /** For a sandbox built from a snapshot: makes its next VM now. */
  async warm() {
    this.#check('warm');
    const r = await callNative(() => this.#native.warm());
    if (isRawError(r)) throw toError(r);
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
    const r = callNative(() => native.createPool(cfg, n, size));
    if (isRawError(r)) throw toError(r);
    this.#native = r;
    this.#maxOutput = cfg.maxOutput;
  }

  #check(where) {
    if (this.#closed) throw new errorClasses.InvalidConfigError(`hvsandbox: SandboxPool.${where}: the pool is closed`);
  }

  /** Runs in a pooled sandbox (resuming the snapshot with `args`). */
  async run(args, opts) {
    if (opts === undefined && args !== null && typeof args === 'object' && !Array.isArray(args)) [args, opts] = [undefined, args];
    checkKeys(opts, RUN_OPTIONS, 'SandboxPool.run()');
    opts = opts || {};
    this.#check('run');
    if (opts.onStdout !== undefined || opts.onStderr !== undefined) {
      const sb = await this.acquire();
      try {
        return await sb.run(args, opts);
      } finally {
        await sb.close();
      }
    }
    const cmd = commandOf(args, opts, 'SandboxPool.run()', true);
    const signal = checkSignal(opts.signal, 'SandboxPool.run()');
    const encoding = checkEncoding(opts.encoding, 'SandboxPool.run()');
    return settle((cancel) => this.#native.run(cmd, cancel), { signal, encoding });
  }

  /** A sandbox on loan: use it, then `close()` it to give it back. */
  async acquire() {
    this.#check('acquire');
    const r = await callNative(() => this.#native.acquire());
    if (isRawError(r)) throw toError(r);
    return Sandbox._wrap(r, true, this.#maxOutput);
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

const {
  TimeoutError,
  AbortError,
  MemoryLimitError,
  OutputLimitError,
  GuestCrashedError,
  InvalidProgramError,
  InvalidConfigError,
  KvmUnavailableError,
  SandboxPoisonedError,
  SandboxBusyError,
  JailViolationError,
  SnapshotInvalidError,
  InternalError,
} = errorClasses;

module.exports = {
  run,
  Sandbox,
  SandboxProcess,
  Snapshot,
  SandboxPool,
  ErrorCodes,
  SandboxError,
  TimeoutError,
  AbortError,
  MemoryLimitError,
  OutputLimitError,
  GuestCrashedError,
  InvalidProgramError,
  InvalidConfigError,
  KvmUnavailableError,
  SandboxPoisonedError,
  SandboxBusyError,
  JailViolationError,
  SnapshotInvalidError,
  InternalError,
};
