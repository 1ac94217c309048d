'use strict';
// The addon's plain error objects (kind = Rust `ErrorKind::code()`) as
// the SandboxError subclasses of error-classes.js.

const classes = require('./error-classes');

const { SandboxError, InternalError, AbortError } = classes;
const byKind = Object.fromEntries(Object.values(classes).filter((c) => c.kind).map((c) => [c.kind, c]));

// ---------------------------------------------------------------- errors

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
  const cls = byKind[raw.kind] || InternalError;
  return new cls(`hvsandbox: ${raw.message}`, {
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
  return new InternalError(`hvsandbox: ${e && e.message ? e.message : String(e)}`, { cause: e });
}

function callNative(fn) {
  try {
    return fn();
  } catch (e) {
    throw internal(e);
  }
}

function abortError(signal, partial, encoding) {
  return new AbortError('hvsandbox: the run was aborted', {
    stdout: decode(partial ? partial.stdout : Buffer.alloc(0), encoding),
    stderr: decode(partial ? partial.stderr : Buffer.alloc(0), encoding),
    cause: signal ? signal.reason : undefined,
  });
}

/** The addon's answer, or the error it stands for, thrown. */
function unwrap(r, opts) {
  if (isRawError(r)) throw toError(r, opts);
  return r;
}

module.exports = { isRawError, decode, toError, internal, callNative, abortError, unwrap };
