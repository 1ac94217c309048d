'use strict';
// SandboxProcess: a spawned program's events as Node streams.

const { Readable, Writable } = require('node:stream');

const { abortError, internal, isRawError, toError } = require('./errors');
const { resultOf } = require('./options');

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

module.exports = { SandboxProcess };
