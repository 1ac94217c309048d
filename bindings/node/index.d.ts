// Types of the npm package `hvsandbox` (index.js). Hand-written beside
// index.js and checked: test/types.test.mjs compiles test/usage.ts against
// them with `tsc --noEmit --strict`, and the tests exercise every name.

/// <reference types="node" />
import type { Readable, Writable } from 'node:stream';

/** Bytes in: a string (UTF-8), Buffer or Uint8Array. */
export type Input = string | Buffer | Uint8Array;

/** A size in bytes: a whole number, or a string like `'64M'`, `'512K'`, `'1GiB'`. */
export type Size = number | string;

/** Settings of a sandbox (`SandboxBuilder`), fixed when it is built. */
export interface SandboxOptions {
  /** Guest memory (a multiple of 2 MiB, 16M ..= 16G). Default `'64M'`. */
  memory?: Size;
  /** Wall-clock limit of each run, boot included. Default 10000. */
  timeoutMs?: number;
  /** Guest CPU-time limit of each run. Default: none. */
  cpuTimeMs?: number;
  /** Output kept per stream (more is truncated). Default `'1M'`. */
  maxOutput?: Size;
  /** Fail with `ERR_HVSANDBOX_OUTPUT_LIMIT` instead of truncating. */
  failOnOutputLimit?: boolean;
  /** Environment of every run. */
  env?: Record<string, string>;
  /** Read-only host directories: `{ '/guest/dir': '/host/dir' }`, or a list
   * (`kernelFs: true` lets that mount enter procfs, sysfs, ...). */
  mounts?: Record<string, string> | Array<{ host: string; guest: string; kernelFs?: boolean }>;
  /** Files placed in the guest for every run: `{ '/path': contents }`. */
  files?: Files;
  /** Working directory of every run (created if missing). Default `/`. */
  cwd?: string;
  /** The vCPU thread's seccomp filter. Default `'enforce'`. */
  seccomp?: 'enforce' | 'log' | 'off';
  /** Where a fresh VM's RAM comes from: `'off'` (ordinary memory, the
   * default), `'prefer'` (the host's hugetlb pool, `vm.nr_hugepages`, when
   * it can hold the VM's RAM, else ordinary memory) or `'require'` (the
   * pool, or the run fails with `ERR_HVSANDBOX_INVALID_CONFIG`). Runs from
   * a snapshot are unaffected. */
  hugePages?: 'off' | 'prefer' | 'require';
  maxProcesses?: number;
  maxOpenFiles?: number;
  /** Bytes of input (stdin and files) a run may take. Default `'256M'`. */
  maxInput?: Size;
  /** Bytes `collect` may bring back. Default `'64M'`. */
  maxCollectBytes?: Size;
  /** Files `collect` may bring back. Default 4096. */
  maxCollectFiles?: number;
}

export type Files = Record<string, Input | { data: Input; mode?: number }>;

/** What one run gets beside its arguments (`Command`). */
export interface CommandOptions {
  /** stdin: these bytes, then the end of input. */
  input?: Input;
  /** Environment added for this run (on top of the sandbox's). */
  env?: Record<string, string>;
  /** Start from an empty environment instead of the sandbox's. */
  envClear?: boolean;
  /** Files for this run (replacing the sandbox's at the same path). */
  files?: Files;
  cwd?: string;
  /** The program as an ELF image in memory; `args[0]` is its argv[0]. */
  image?: Input;
}

export interface RunOptions<E extends BufferEncoding | undefined = undefined> extends CommandOptions {
  /** Guest paths whose files come back in `result.files`. */
  collect?: string[];
  /** Aborting stops the guest: the promise rejects with an `AbortError`. */
  signal?: AbortSignal;
  /** stdout, stderr (and collected files) as strings in this encoding. */
  encoding?: E;
  /** Called with each chunk of stdout as the program writes it. */
  onStdout?: (chunk: Output<E>) => void;
  onStderr?: (chunk: Output<E>) => void;
}

export interface SpawnOptions<E extends BufferEncoding | undefined = undefined> extends CommandOptions {
  signal?: AbortSignal;
  /** The streams' encoding (and `wait()`'s result's). */
  encoding?: E;
  /** Let the streams carry more than `maxOutput` (still bounded in memory). */
  unlimitedStreaming?: boolean;
}

export interface SnapshotOptions extends CommandOptions {
  /** Where to freeze: where the program reads /dev/hvsandbox/checkpoint
   * (default; its entry if it never does), or its entry. */
  at?: 'checkpoint' | 'entry';
}

export type Output<E> = E extends BufferEncoding ? string : Buffer;

export interface Stats {
  wallMs: number;
  cpuMs: number;
  exits: number;
  syscalls: number;
  memoryUsed: number;
  pageFaults: number;
  processes: number;
  stdoutBytes: number;
  stderrBytes: number;
  /** System-call and `cpuid` sites the guest runtime rewrote to enter it
   * by a jump (system calls where the host's `syscall` is slow, `cpuid`
   * at an entry snapshot; `HVSANDBOX_REWRITE=0/1/cpuid` forces). */
  rewrittenSites: number;
  /** System calls that took the host hypervisor's slow path (a `syscall`
   * instruction, not a rewritten site): all of them with rewriting off. */
  slowSyscalls: number;
  /** System calls the guest runtime does not implement, by number. */
  unknownSyscalls: Record<number, number>;
}

export interface Fault {
  vector: number;
  errorCode: number;
  rip: number;
  address: number | null;
}

/** A completed run (a non-zero exit or a signal is a result, not an error). */
export interface RunResult<E extends BufferEncoding | undefined = undefined> {
  /** The exit code, or null when the program died of a signal. */
  exitCode: number | null;
  /** The signal that ended the program (`'SIGSEGV'`), or null. */
  signal: NodeJS.Signals | string | null;
  stdout: Output<E>;
  stderr: Output<E>;
  /** Some output was cut at `maxOutput`. */
  truncated: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** The CPU exception that ended the program, if one did. */
  fault: Fault | null;
  /** Collected files by guest path. */
  files: Record<string, Output<E>>;
  filesTruncated: boolean;
  stats: Stats;
}

/** Stable codes of `SandboxError.code`, by Rust `ErrorKind::code()`. */
export declare const ErrorCodes: Readonly<{
  TIMEOUT: 'ERR_HVSANDBOX_TIMEOUT';
  CANCELLED: 'ERR_HVSANDBOX_ABORTED';
  MEMORY_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_MEMORY_LIMIT';
  OUTPUT_LIMIT_EXCEEDED: 'ERR_HVSANDBOX_OUTPUT_LIMIT';
  GUEST_CRASHED: 'ERR_HVSANDBOX_GUEST_CRASHED';
  INVALID_PROGRAM: 'ERR_HVSANDBOX_INVALID_PROGRAM';
  INVALID_CONFIG: 'ERR_HVSANDBOX_INVALID_CONFIG';
  KVM_UNAVAILABLE: 'ERR_HVSANDBOX_KVM_UNAVAILABLE';
  SANDBOX_POISONED: 'ERR_HVSANDBOX_POISONED';
  SANDBOX_BUSY: 'ERR_HVSANDBOX_BUSY';
  JAIL_VIOLATION: 'ERR_HVSANDBOX_JAIL_VIOLATION';
  SNAPSHOT_INVALID: 'ERR_HVSANDBOX_SNAPSHOT_INVALID';
  INTERNAL: 'ERR_HVSANDBOX_INTERNAL';
}>;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];
export type ErrorKind = keyof typeof ErrorCodes;

/** Every hvsandbox failure. Bad options are `TypeError`s instead. */
export declare class SandboxError extends Error {
  readonly code: ErrorCode;
  /** The Rust `ErrorKind` code, e.g. `'MEMORY_LIMIT_EXCEEDED'`. */
  readonly kind: ErrorKind;
  /** For a run stopped by a limit or an abort: what it wrote until then. */
  readonly stdout?: Buffer | string;
  readonly stderr?: Buffer | string;
  /** Timeout: the limit was on CPU time. */
  readonly cpu?: boolean;
  /** The limit hit: ms for a timeout, bytes for memory or output. */
  readonly limit?: number;
  /** Output limit: which stream. */
  readonly stream?: 'stdout' | 'stderr';
  /** Invalid program: which. */
  readonly program?: string;
  /** Jail violation: the system call. */
  readonly syscall?: string;
}
export declare class TimeoutError extends SandboxError { readonly code: 'ERR_HVSANDBOX_TIMEOUT'; }
/** An abort (AbortSignal, `kill()`, `close()`); `cause` is the signal's reason. */
export declare class AbortError extends SandboxError { readonly code: 'ERR_HVSANDBOX_ABORTED'; }
export declare class MemoryLimitError extends SandboxError { readonly code: 'ERR_HVSANDBOX_MEMORY_LIMIT'; }
export declare class OutputLimitError extends SandboxError { readonly code: 'ERR_HVSANDBOX_OUTPUT_LIMIT'; }
export declare class GuestCrashedError extends SandboxError { readonly code: 'ERR_HVSANDBOX_GUEST_CRASHED'; }
export declare class InvalidProgramError extends SandboxError { readonly code: 'ERR_HVSANDBOX_INVALID_PROGRAM'; }
export declare class InvalidConfigError extends SandboxError { readonly code: 'ERR_HVSANDBOX_INVALID_CONFIG'; }
export declare class KvmUnavailableError extends SandboxError { readonly code: 'ERR_HVSANDBOX_KVM_UNAVAILABLE'; }
export declare class SandboxPoisonedError extends SandboxError { readonly code: 'ERR_HVSANDBOX_POISONED'; }
export declare class SandboxBusyError extends SandboxError { readonly code: 'ERR_HVSANDBOX_BUSY'; }
export declare class JailViolationError extends SandboxError { readonly code: 'ERR_HVSANDBOX_JAIL_VIOLATION'; }
export declare class SnapshotInvalidError extends SandboxError { readonly code: 'ERR_HVSANDBOX_SNAPSHOT_INVALID'; }
export declare class InternalError extends SandboxError { readonly code: 'ERR_HVSANDBOX_INTERNAL'; }

/** One run in a sandbox of its own. */
export declare function run<E extends BufferEncoding | undefined = undefined>(
  args: string[],
  options?: SandboxOptions & RunOptions<E>,
): Promise<RunResult<E>>;

/** A program running in a sandbox (`Sandbox.spawn`). */
export declare class SandboxProcess<E extends BufferEncoding | undefined = undefined> {
  private constructor();
  /** What the program writes to stdout, as it writes it (async-iterable). */
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The program's stdin; `end()` is the end of input. */
  readonly stdin: Writable;
  /** Set once the program exited. */
  readonly exitCode: number | null;
  readonly signalCode: string | null;
  /** Its result, as `run()` gives it (everything it wrote, up to `maxOutput`). */
  wait(): Promise<RunResult<E>>;
  /** Stops it: `wait()` rejects with an `AbortError`. */
  kill(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A frozen program, to start sandboxes from. */
export declare class Snapshot {
  private constructor();
  readonly point: 'checkpoint' | 'entry';
  readonly memoryBytes: number;
  readonly residentBytes: number;
  readonly maxProcesses: number;
  readonly maxOpenFiles: number;
  readonly args: string[];
  readonly env: Record<string, string>;
  readonly mounts: Array<{ host: string; guest: string }>;
  /**
   * Whether VMs made from now on for this snapshot get their own copy of its
   * memory instead of sharing it copy-on-write: a fresh VM's first run is
   * faster (on shadow-paging hosts, ~3x for python3 from a snapshot file), at
   * the cost of the copy and of memory per clone. For a snapshot that runs
   * once or a few times; pools should share (the default).
   */
  copyMemory(copy?: boolean): void;
  save(path: string): Promise<void>;
  static load(path: string): Promise<Snapshot>;
  static fromBytes(data: Input): Promise<Snapshot>;
}

/** Runs programs one at a time, each in a fresh micro-VM (runs queue). */
export declare class Sandbox {
  constructor(options?: SandboxOptions);
  /** Runs start from `snapshot`; `run(args)` gives the resumed run's arguments. */
  static fromSnapshot(snapshot: Snapshot, options?: SandboxOptions): Sandbox;
  run<E extends BufferEncoding | undefined = undefined>(args: string[], options?: RunOptions<E>): Promise<RunResult<E>>;
  /** For a sandbox built from a snapshot: a run with no arguments. */
  run<E extends BufferEncoding | undefined = undefined>(options?: RunOptions<E>): Promise<RunResult<E>>;
  spawn<E extends BufferEncoding | undefined = undefined>(args: string[], options?: SpawnOptions<E>): SandboxProcess<E>;
  spawn<E extends BufferEncoding | undefined = undefined>(options?: SpawnOptions<E>): SandboxProcess<E>;
  snapshot(args: string[], options?: SnapshotOptions): Promise<Snapshot>;
  /** For a sandbox built from a snapshot: makes its next VM now. */
  warm(): Promise<void>;
  /** An earlier failure made it unusable (null while a run holds it). */
  readonly poisoned: boolean | null;
  readonly closed: boolean;
  /** Stops what runs and frees it (a pooled one goes back). Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface PoolOptions extends SandboxOptions {
  /** Warm sandboxes kept ready (1 ..= 1024). Default 4. */
  size?: number;
}

/** Warm sandboxes of a snapshot, refilled in the background. */
export declare class SandboxPool {
  constructor(snapshot: Snapshot, options?: PoolOptions);
  run<E extends BufferEncoding | undefined = undefined>(args: string[], options?: RunOptions<E>): Promise<RunResult<E>>;
  run<E extends BufferEncoding | undefined = undefined>(options?: RunOptions<E>): Promise<RunResult<E>>;
  /** A sandbox on loan; `close()` it to give it back. */
  acquire(): Promise<Sandbox>;
  readonly ready: number;
  readonly size: number;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
