/**
 * The HTTP server's refusals (common/http/server.ts), in process over real
 * sockets: every request of the known-bad corpus (test/http/corpus) gets its
 * 4xx and the server goes on; a route that throws is a 500 logged once per
 * kind; per-address and total connection caps (the oldest idle connection
 * makes room, a busy one does not); slow senders are cut at the header
 * timeout; plain bytes on the TLS port and a handshake that never ends are
 * closed; the rejections are counted for /metrics.
 *
 * Needs: nothing (no root, no cluster). The same corpus and a fast-check
 * fuzz run against the real agent and operator in test/http/hostile-input.test.ts.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { pino } from 'pino';
import type { ServerLimits } from '../../common/http/requests.ts';
import { HttpServer, text } from '../../common/http/server.ts';
import { servingTls } from '../../common/http/tls.ts';
import type { Logger } from '../../common/log.ts';
import { corpus, corpusAttack, send, type Target } from '../http/attack.ts';

function logged(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return {
    log: pino<never>(
      { level: 'info' },
      { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) },
    ),
    lines,
  };
}

async function serve(
  t: { after(fn: () => unknown): void },
  options: { tls?: boolean; limits?: Partial<ServerLimits> } = {},
) {
  const { log, lines } = logged();
  const secure = options.tls
    ? { tls: servingTls({ commonName: 'x', names: [], log }), gate: { check: () => undefined } }
    : undefined;
  let slow: (() => void) | undefined;
  const server = new HttpServer(log, secure, options.limits)
    .route('/healthz', () => text('ok\n'))
    .route('/readyz', () => text('ready\n'))
    .route('/metrics', () => text('# metrics\n'))
    .route('/boom', () => {
      throw new TypeError('boom');
    })
    .route('/slow', () => new Promise((resolve) => (slow = () => resolve(text('late\n')))));
  const { port } = await server.listen('127.0.0.1', 0);
  t.after(() => server.close());
  const target: Target = { host: '127.0.0.1', port, tls: options.tls === true };
  const rejected = () => {
    const out: Record<string, number> = {};
    server.rejectedMetric('x').samples((labels, v) => (out[/reason="(\w+)"/.exec(labels)![1]!] = Number(v)));
    return out;
  };
  return { server, target, lines, rejected, release: () => slow?.() };
}

const healthz = (target: Target) =>
  send(target, { bytes: Buffer.from('GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n'), wrap: 'match', hold: false });

/** Opens a plain TCP connection from `localAddress`; resolves once connected, with whether the server closed it within `ms`. */
function openFrom(target: Target, localAddress: string, ms = 300): Promise<{ socket: Socket; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port, localAddress });
    socket.on('error', () => {});
    socket.once('connect', () => {
      const timer = setTimeout(() => resolve({ socket, closed: false }), ms);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve({ socket, closed: true });
      });
    });
  });
}

test('the known-bad corpus: each request gets its status (or a closed connection) and the server goes on', async (t) => {
  const { target, rejected } = await serve(t);
  const wrong: string[] = [];
  for (const entry of corpus()) {
    const status = await send(target, corpusAttack(entry));
    if (status !== entry.status) wrong.push(`${entry.name}: ${status}, not ${entry.status}`);
    assert.equal(await healthz(target), 200, `alive after: ${entry.name}`);
  }
  assert.deepEqual(wrong, []);
  const counts = rejected();
  for (const reason of ['malformed', 'headers_too_large', 'method', 'not_found'])
    assert.ok((counts[reason] ?? 0) > 0, `${reason} counted: ${JSON.stringify(counts)}`);
});

test('a route that throws is a 500, logged once per kind, and the server goes on', async (t) => {
  const { target, lines, rejected } = await serve(t);
  for (let i = 0; i < 5; i++)
    assert.equal(
      await send(target, { bytes: Buffer.from('GET /boom HTTP/1.1\r\nHost: a\r\n\r\n'), wrap: 'match', hold: false }),
      500,
    );
  assert.equal(lines.filter((l) => String(l.msg).startsWith('request failed')).length, 1, 'logged once');
  assert.equal(rejected().internal, 5, 'counted each time');
  assert.equal(await healthz(target), 200);
});

test('connections: a cap per peer address; at the total cap the oldest idle connection makes room, a busy one does not', async (t) => {
  const { target, rejected, release } = await serve(t, { limits: { maxConnectionsPerAddress: 3, maxConnections: 5 } });
  const a = [];
  for (let i = 0; i < 3; i++) a.push(await openFrom(target, '127.0.0.2'));
  assert.deepEqual(
    a.map((c) => c.closed),
    [false, false, false],
  );
  assert.equal((await openFrom(target, '127.0.0.2')).closed, true, 'the 4th from one address is closed at once');
  // A busy connection (its answer pending) and an idle one from 127.0.0.3: 5 in all.
  const busy = await openFrom(target, '127.0.0.3');
  busy.socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
  const answer = new Promise<string>((resolve) => {
    let got = '';
    busy.socket.on('data', (d: Buffer) => (got += d.toString()));
    busy.socket.on('close', () => resolve(got));
  });
  await new Promise((r) => setTimeout(r, 100));
  const b = await openFrom(target, '127.0.0.3');
  assert.equal(b.closed, false);
  assert.equal(await closedSoon(a[0]!.socket, 100), false, 'under the cap nobody is closed');
  // The kubelet's probe from yet another address gets through: the oldest idle connection makes room.
  assert.equal(
    await send(
      target,
      { bytes: Buffer.from('GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n'), wrap: 'match', hold: false },
      { localAddress: '127.0.0.4' },
    ),
    200,
  );
  assert.equal(await closedSoon(a[0]!.socket), true, 'the oldest idle connection was closed to make room');
  assert.equal(await closedSoon(a[1]!.socket, 100), false, 'only one');
  release();
  busy.socket.end();
  assert.match(await answer, /^HTTP\/1\.1 200 OK/, 'the busy connection was never closed for room');
  assert.ok((rejected().connections ?? 0) >= 2, JSON.stringify(rejected()));
  for (const c of [...a, b]) c.socket.destroy();
});

function closedSoon(socket: Socket, ms = 500): Promise<boolean> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

test('a slow sender is cut at the header timeout with a 408', async (t) => {
  const { target, rejected } = await serve(t, { limits: { headersTimeoutMs: 1_000, requestTimeoutMs: 2_000 } });
  const started = Date.now();
  const status = await new Promise<number>((resolve) => {
    const socket = connect(target.port, target.host, () => socket.write('GET /healthz HTTP/1.1\r\nHost: a\r\nX: '));
    const drip = setInterval(() => socket.write('x'), 100);
    let head = '';
    socket.on('data', (d: Buffer) => (head += d.toString()));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(drip);
      resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0));
    });
  });
  assert.equal(status, 408);
  assert.ok(Date.now() - started < 4_000, `cut after ${Date.now() - started} ms`);
  assert.equal(rejected().timeout, 1);
});

test('TLS: plain bytes on the TLS port and a handshake that never ends are closed; HTTPS still answers', async (t) => {
  const { target, rejected } = await serve(t, { tls: true, limits: { handshakeTimeoutMs: 500 } });
  assert.equal(
    await send(target, { bytes: Buffer.from('GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n'), wrap: 'raw', hold: false }),
    0,
  );
  assert.equal(
    await send(target, { bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), wrap: 'raw', hold: false }),
    0,
  );
  const silent = await openFrom(target, '127.0.0.2', 3_000);
  assert.equal(silent.closed, true, 'a silent connection is closed at the handshake timeout');
  assert.equal(await healthz(target), 200);
  assert.equal(rejected().tls, 3, JSON.stringify(rejected()));
});
