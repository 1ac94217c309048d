'use strict';
// The public error classes: every hvsandbox failure is a SandboxError
// whose `code` is stable and whose `kind` is the Rust `ErrorKind::code()`.

/** Rust `ErrorKind::code()` → the Node `code`. */
const CODES = {
  TIMEOUT: 'ERR_HVSANDBOX_TIMEOUT',
  CANCELLED: 'ERR_HVSANDBOX_ABORTED',
  MEMORY_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_MEMORY_LIMIT',
  OUTPUT_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_OUTPUT_LIMIT',
  GUEST_CRASHED: 'ERR_HVSANDBOX_GUEST_CRASHED',
  INVALID_PROGRAM: 'ERR_HVSANDBOX_INVALID_PROGRAM',
  INVALID_CONFIG: 'ERR_HVSANDBOX_INVALID_CONFIG',
  KVM_UNAVAILABLE: 'ERR_HVSANDBOX_KVM_UNAVAILABLE',
  SANDBOX_POISONED: 'ERR_HVSANDBOX_POISONED',
  SANDBOX_BUSY: 'ERR_HVSANDBOX_BUSY',
  JAIL_VIOLATION: 'ERR_HVSANDBOX_JAIL_VIOLATION',
  SNAPSHOT_INVALID: 'ERR_HVSANDBOX_SNAPSHOT_INVALID',
  INTERNAL: 'ERR_HVSANDBOX_INTERNAL',
};

/** `code` by Rust kind, for `switch (err.code)` without string typos. */
const ErrorCodes = Object.freeze({ ...CODES });

const DETAILS = ['stdout', 'stderr', 'cpu', 'limit', 'stream', 'program', 'syscall'];

class SandboxError extends Error {
  constructor(message, details = {}, kind = new.target.kind || 'INTERNAL') {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    Object.defineProperty(this, 'name', { value: new.target.name, writable: true, configurable: true });
    this.code = CODES[kind] || CODES.INTERNAL;
    this.kind = kind;
    for (const k of DETAILS) {
      if (details[k] !== undefined && details[k] !== null) this[k] = details[k];
    }
  }
}

class TimeoutError extends SandboxError { static kind = 'TIMEOUT'; }
/** Stopped by an AbortSignal, `kill()` or `close()` (Rust `Cancelled`). */
class AbortError extends SandboxError { static kind = 'CANCELLED'; }
class MemoryLimitError extends SandboxError { static kind = 'MEMORY_LIMIT_EXCEEDED'; }
class OutputLimitError extends SandboxError { static kind = 'OUTPUT_LIMIT_EXCEEDED'; }
class GuestCrashedError extends SandboxError { static kind = 'GUEST_CRASHED'; }
class InvalidProgramError extends SandboxError { static kind = 'INVALID_PROGRAM'; }
class InvalidConfigError extends SandboxError { static kind = 'INVALID_CONFIG'; }
class KvmUnavailableError extends SandboxError { static kind = 'KVM_UNAVAILABLE'; }
class SandboxPoisonedError extends SandboxError { static kind = 'SANDBOX_POISONED'; }
class SandboxBusyError extends SandboxError { static kind = 'SANDBOX_BUSY'; }
class JailViolationError extends SandboxError { static kind = 'JAIL_VIOLATION'; }
class SnapshotInvalidError extends SandboxError { static kind = 'SNAPSHOT_INVALID'; }
class InternalError extends SandboxError { static kind = 'INTERNAL'; }

module.exports = {
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
