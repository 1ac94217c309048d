'use strict';
// Options in (every key and type checked: a TypeError names the option)
// and results out.

const os = require('node:os');

const native = require('./native');
const { abortError, callNative, decode, internal, isRawError, toError } = require('./errors');

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
  'seccomp', 'hugePages', 'maxProcesses', 'maxOpenFiles', 'maxInput', 'maxCollectBytes', 'maxCollectFiles',
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
  if (o.hugePages !== undefined) {
    if (!['off', 'prefer', 'require'].includes(o.hugePages)) {
      throw typeError(`${where}: hugePages must be 'off', 'prefer' or 'require', got ${JSON.stringify(o.hugePages)}`);
    }
    c.hugePages = o.hugePages;
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
  if (COMMAND_OPTIONS.every((k) => o[k] === undefined) && o.unlimitedStreaming === undefined) {
    // The compact form the addon reads by index (src/convert.rs CommandArg).
    return resume ? [null, ...args] : args.slice();
  }
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

/** A command of commandOf in the object form (RawCommand). */
function objectCommand(cmd) {
  if (!Array.isArray(cmd)) return cmd;
  return cmd[0] === null ? { args: cmd.slice(1) } : { program: cmd[0], args: cmd.slice(1) };
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
/**
 * The arguments of a run or spawn: `(args, opts)`, or `(opts)` for a
 * sandbox built from a snapshot. Returns the command and the checked
 * signal and encoding.
 */
function runArgs(args, opts, allowed, where, resume) {
  if (opts === undefined && args !== null && typeof args === 'object' && !Array.isArray(args)) [args, opts] = [undefined, args];
  opts = checkKeys(opts, allowed, where);
  const cmd = commandOf(args, opts, where, resume);
  return { cmd, opts, signal: checkSignal(opts.signal, where), encoding: checkEncoding(opts.encoding, where) };
}

// ---------------------------------------------------------------- results

const SIGNAL_NAMES = Object.fromEntries(Object.entries(os.constants.signals).map(([name, n]) => [n, name]));

function signalName(n) {
  return n === null || n === undefined ? null : SIGNAL_NAMES[n] || `SIG${n}`;
}

function unknownOf(flat) {
  const unknownSyscalls = {};
  for (let i = 0; i + 1 < flat.length; i += 2) unknownSyscalls[flat[i]] = flat[i + 1];
  return unknownSyscalls;
}

const EMPTY = Buffer.alloc(0);
/** Numbers per output (src/convert.rs NUMBERS). */
const NUMBERS = 14;
const NO_OUTPUT = [];
let table = null;

/**
 * The result object of a native output: `[numbers, stdout, stderr, extra]`
 * (src/convert.rs `RawOutput`: numbers are exitCode, signal (NaN: none),
 * flags (1, 2, 4: stdout, stderr, files truncated), then the stats).
 */
function resultOf(raw, encoding, streamed) {
  let at = 0;
  let n;
  let rest = raw;
  if (typeof raw === 'number' || typeof raw[0] === 'number') {
    // A row of the addon's table (src/fast.rs), read before the next
    // batch of runs is settled.
    at = (typeof raw === 'number' ? raw : raw[0]) * NUMBERS;
    if (typeof raw === 'number') rest = NO_OUTPUT;
    if (table === null) table = native.resultTable();
    n = table;
  } else {
    n = raw[0];
  }
  const [, rawStdout, rawStderr, extra] = rest;
  let stdout = rawStdout || EMPTY;
  let stderr = rawStderr || EMPTY;
  let stdoutTruncated = (n[at + 2] & 1) !== 0;
  let stderrTruncated = (n[at + 2] & 2) !== 0;
  if (streamed) {
    stdout = Buffer.concat([streamed.stdout, stdout]);
    stderr = Buffer.concat([streamed.stderr, stderr]);
    stdoutTruncated = stdoutTruncated || streamed.stdoutTruncated;
    stderrTruncated = stderrTruncated || streamed.stderrTruncated;
  }
  const files = {};
  if (extra) for (const f of extra.files) files[f.path] = decode(f.data, encoding);
  const fault = extra && extra.fault;
  return {
    exitCode: Number.isNaN(n[at + 0]) ? null : n[at + 0],
    signal: Number.isNaN(n[at + 1]) ? null : signalName(n[at + 1]),
    stdout: decode(stdout, encoding),
    stderr: decode(stderr, encoding),
    truncated: stdoutTruncated || stderrTruncated,
    stdoutTruncated,
    stderrTruncated,
    fault: fault
      ? { vector: fault.vector, errorCode: fault.errorCode, rip: fault.rip, address: fault.address ?? null }
      : null,
    files,
    filesTruncated: (n[at + 2] & 4) !== 0,
    stats: {
      wallMs: n[at + 3],
      cpuMs: n[at + 4],
      exits: n[at + 5],
      syscalls: n[at + 6],
      memoryUsed: n[at + 7],
      pageFaults: n[at + 8],
      processes: n[at + 9],
      stdoutBytes: n[at + 10],
      stderrBytes: n[at + 11],
      rewrittenSites: n[at + 12],
      slowSyscalls: n[at + 13],
      unknownSyscalls: extra ? unknownOf(extra.unknownSyscalls) : {},
    },
  };
}

/**
 * The result of a native run promise (`start(cancel)` makes it): resolves
 * to the result or rejects with a SandboxError (an AbortError when
 * `signal` aborted it). Without a signal, one `then` and no async
 * function: each promise layer is another microtask turn on the way from
 * a run's end to the caller's next call.
 */
function settle(start, { signal, encoding }) {
  if (signal) return settleAbortable(start, signal, encoding);
  let pending;
  try {
    pending = start(undefined);
  } catch (e) {
    return Promise.reject(internal(e));
  }
  return pending.then((raw) => {
    if (isRawError(raw)) throw toError(raw, { encoding });
    return resultOf(raw, encoding);
  });
}

/** `settle` with `signal` wired to a cancel token. */
async function settleAbortable(start, signal, encoding) {
  if (signal.aborted) throw abortError(signal, null, encoding);
  const cancel = new native.NativeCancel();
  const onAbort = () => cancel.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const raw = await callNative(() => start(cancel));
    if (isRawError(raw)) throw toError(raw, { encoding, cause: signal.aborted ? signal.reason : undefined });
    return resultOf(raw, encoding);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

module.exports = {
  typeError, checkKeys, str, bytes, int, SANDBOX_OPTIONS, RUN_OPTIONS, SPAWN_OPTIONS, SNAPSHOT_OPTIONS,
  sandboxConfig, commandOf, objectCommand, checkSignal, checkEncoding, checkCallback, splitOptions, resultOf, settle, runArgs,
};
