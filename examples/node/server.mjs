// A small HTTP service that runs submitted shell scripts in hvsandbox:
// POST /run with the script as the body; the answer is JSON
// { exitCode, signal, stdout, stderr, truncated, stats } or
// { error: { code, message }, stdout, stderr } for a run that did not
// complete (timeout, memory, ...). Each run takes a warm sandbox from a
// pool (a snapshot of busybox sh at its entry) under strict limits.
//
//   node examples/node/server.mjs [port]      # then:
//   curl -d 'echo hi; uname -a' http://127.0.0.1:8080/run
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

// In an application: import { Sandbox, SandboxPool } from 'hvsandbox';
import { Sandbox, SandboxPool, SandboxError } from '../../bindings/node/index.js';

const MAX_SCRIPT = 64 * 1024;
const LIMITS = { timeoutMs: 2000, cpuTimeMs: 1000, maxOutput: 64 * 1024 };

/** Starts the service on `port` (0: any) of 127.0.0.1; resolves to { server, pool, url }. */
export async function start({ port = 0, poolSize = 4 } = {}) {
  const sb = new Sandbox({ memory: '64M' });
  const snap = await sb.snapshot(['/bin/busybox', 'sh'], { at: 'entry' });
  await sb.close();
  const pool = new SandboxPool(snap, { size: poolSize, ...LIMITS });

  const server = createServer(async (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'POST' || req.url !== '/run') return reply(404, { error: { message: 'POST /run' } });
    const chunks = [];
    let size = 0;
    for await (const c of req) {
      size += c.length;
      if (size > MAX_SCRIPT) return reply(413, { error: { message: `script over ${MAX_SCRIPT} bytes` } });
      chunks.push(c);
    }
    // A client that goes away aborts its run.
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    try {
      const r = await pool.run(['sh', '-s'], { input: Buffer.concat(chunks), encoding: 'utf8', signal: ac.signal });
      reply(200, {
        exitCode: r.exitCode, signal: r.signal, stdout: r.stdout, stderr: r.stderr, truncated: r.truncated,
        stats: { wallMs: r.stats.wallMs, cpuMs: r.stats.cpuMs, syscalls: r.stats.syscalls },
      });
    } catch (e) {
      if (!(e instanceof SandboxError)) return reply(500, { error: { message: String(e) } });
      reply(e.code === 'ERR_HVSANDBOX_INVALID_PROGRAM' ? 400 : 422, {
        error: { code: e.code, message: e.message }, stdout: e.stdout ?? '', stderr: e.stderr ?? '',
      });
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { server, pool, url };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { url } = await start({ port: Number(process.argv[2] ?? 8080) });
  console.log(`hvsandbox service on ${url} (POST /run with a shell script)`);
}
