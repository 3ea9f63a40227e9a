/**
 * Hostile HTTP peers for test/http: fast-check arbitraries of raw requests
 * (request lines, targets, percent-encoding, Host and other headers, sizes
 * and counts, bodies and chunking, pipelining, binary garbage, TLS bytes on
 * the plain port and plain bytes on the TLS port), a sender over raw sockets,
 * slow senders that hold connections open, and a prober that times /healthz
 * as the kubelet does (a fresh connection each time).
 *
 *   hostileRequest                      an Attack arbitrary
 *   send(target, attack) -> status       the first status line's code, 0 when none came
 *   holdConnections(target, {...})       slow senders; .held(), .stop()
 *   probeHealth(target, everyMs)         .stop() -> latencies (Infinity: failed)
 *   corpus()                             test/http/corpus/known-bad.json
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface Target {
  host: string;
  port: number;
  tls: boolean;
}

/** Bytes to send and how: `match` the server's protocol, `raw` plain TCP (plain bytes on a TLS port), `tls` a TLS handshake first (on a plain port too). */
export interface Attack {
  bytes: Buffer;
  wrap: 'match' | 'raw' | 'tls';
  /** Leave the connection open after writing (the server must time it out or answer); else half-close. */
  hold: boolean;
}

const PATHS = [
  '/',
  '/metrics',
  '/healthz',
  '/readyz',
  '/api/v1/cgroups',
  '/api/v1/maps',
  '/maps',
  '/maps/chart.js',
  '/nowhere',
];
const tchar = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/);
/** Any code points, controls and non-ASCII included (sent as UTF-8). */
const junk = fc.string({ unit: 'binary', maxLength: 40 });

const target = fc.oneof(
  fc.constantFrom(...PATHS),
  fc.constantFrom(
    '//[',
    'http://[::1',
    '*',
    '',
    'http://agent/metrics',
    'HTTP://a/healthz',
    'https://x:99999/',
    'http://user:pw@h/metrics',
    'ftp://x/',
    'localhost:9471',
    '//x/metrics',
    '\\metrics',
    '/..',
    '/../../etc/passwd',
    '/api/v1/../../metrics',
    '/%2e%2e/metrics',
    '/metrics#frag',
    '/metrics?x=%',
    '/metrics?' + 'q'.repeat(9000),
  ),
  fc
    .tuple(
      fc.constantFrom(...PATHS),
      fc.constantFrom('%', '%z', '%0', '%zz', '%00', '%2F', '%ff', '%%', '%u0041', '%C0%AF', '%E2%82'),
      fc.string({ maxLength: 8 }),
    )
    .map(([p, e, s]) => p + e + s),
  fc.tuple(fc.constantFrom(...PATHS), junk).map(([p, j]) => p + j),
  junk.map((s) => `/${s}`),
  fc.integer({ min: 1, max: 40_000 }).map((n) => `/${'a'.repeat(n)}`),
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
);
const method = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'GET',
      'GET',
      'GET',
      'HEAD',
      'POST',
      'PUT',
      'DELETE',
      'OPTIONS',
      'TRACE',
      'PATCH',
      'CONNECT',
      'PRI',
      'get',
      'G ET',
    ),
  },
  { weight: 1, arbitrary: tchar },
  { weight: 1, arbitrary: junk },
);
const version = fc.constantFrom(
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.0',
  'HTTP/0.9',
  'HTTP/2.0',
  'HTTP/1.2',
  'HTTP/11',
  'http/1.1',
  'HTTP/1.1 x',
  '',
  'HTTP/1.1\0',
);
const headerName = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      'Host',
      'Content-Length',
      'Transfer-Encoding',
      'Authorization',
      'Connection',
      'Expect',
      'Upgrade',
      'Accept',
      'Cookie',
      'Host ',
      ' Host',
      'Content-Length ',
      'Keep-Alive',
    ),
  },
  { weight: 1, arbitrary: tchar },
  { weight: 1, arbitrary: junk },
);
const headerValue = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      '',
      'chunked',
      'gzip, chunked',
      'chunked, identity',
      '0',
      '-1',
      '5',
      '+5',
      '0x10',
      '99999999999999999999',
      'close',
      'keep-alive',
      'upgrade',
      'Upgrade, HTTP2-Settings',
      'h2c',
      'websocket',
      '100-continue',
      'nonsense-expectation',
      'agent',
      'a:1',
      '[::1]:9471',
      'x y',
      'a/b',
      'a@b',
      '',
      'a\rb',
      'a\nb',
      'a\0b',
      'timeout=99999',
    ),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 64 }).map((s) => `Bearer ${s}`) },
  { weight: 1, arbitrary: junk },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 24_000 }).map((n) => 'v'.repeat(n)) },
);
const headers = fc.oneof(
  { weight: 12, arbitrary: fc.array(fc.tuple(headerName, headerValue), { maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 100, max: 3_000 })
      .map((n) => Array.from({ length: n }, (_, i): [string, string] => [`X-Many-${i}`, 'y'])),
  },
);
const body = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 1, arbitrary: junk },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'hello',
      '5\r\nhello\r\n0\r\n\r\n',
      'zz\r\n',
      'ffffffffffffffff\r\n',
      '0\r\n\r\n',
      '5\r\nhel',
      `5;${'e'.repeat(20_000)}\r\nhello\r\n0\r\n\r\n`,
      '0\r\nTrailer: x\r\n\r\n',
      'GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n',
    ),
  },
);

function requestText(r: {
  method: string;
  target: string;
  version: string;
  host: boolean;
  headers: [string, string][];
  eol: string;
  body: string;
}): string {
  const lines = [
    [r.method, r.target, r.version].filter((p) => p !== '').join(' '),
    ...(r.host ? ['Host: agent'] : []),
    ...r.headers.map(([n, v]) => `${n}: ${v}`),
  ];
  return lines.join(r.eol) + r.eol + r.eol + r.body;
}

/** Requests that parse: what reaches the Gate and the routes (random bearer tokens, paths, a few odd headers). */
const wellFormed = fc
  .record({
    method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST'),
    path: fc.oneof(fc.constantFrom(...PATHS), fc.stringMatching(/^\/[a-z0-9/._~-]{0,30}$/)),
    token: fc.option(
      fc.oneof(fc.stringMatching(/^[A-Za-z0-9._-]{1,80}$/), fc.constantFrom('', 'x', 'eyJhbGciOiJSUzI1NiJ9.e30.sig')),
      { nil: undefined },
    ),
    extra: fc.array(
      fc.tuple(
        fc.constantFrom('Accept', 'Connection', 'User-Agent', 'X-Forwarded-For', 'Content-Length'),
        fc.constantFrom('*/*', 'close', 'keep-alive', 'curl/8', '10.0.0.1', '0'),
      ),
      { maxLength: 3 },
    ),
  })
  .map(
    ({ method, path, token, extra }) =>
      [
        `${method} ${path} HTTP/1.1`,
        'Host: agent',
        ...(token === undefined ? [] : [`Authorization: Bearer ${token}`]),
        ...extra.map(([n, v]) => `${n}: ${v}`),
      ].join('\r\n') + '\r\n\r\n',
  );

const oneRequest = fc
  .record({
    method,
    target,
    version,
    host: fc.boolean(),
    headers,
    eol: fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r'),
    body,
  })
  .map(requestText);

/** A TLS ClientHello's first bytes (record header, handshake header, version): what an HTTPS client sends first. */
const HELLO = Buffer.from('16030100c4010000c00303', 'hex');

const bytes = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.array(oneRequest, { minLength: 1, maxLength: 3 }).map((rs) => Buffer.from(rs.join(''), 'utf8')),
  },
  {
    weight: 6,
    arbitrary: fc.array(wellFormed, { minLength: 1, maxLength: 3 }).map((rs) => Buffer.from(rs.join(''), 'utf8')),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 4_000 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.concat([HELLO, a])) },
);

export const hostileRequest: fc.Arbitrary<Attack> = fc.record({
  bytes,
  wrap: fc.constantFrom('match', 'match', 'match', 'match', 'match', 'raw', 'tls'),
  hold: fc.boolean().map((b) => b && Math.random() < 0.2),
});

/** Sends one attack on a new connection; resolves with the status of the first answer (0: none, the connection closed). */
export function send(
  to: Target,
  attack: Attack,
  options: { timeoutMs?: number; localAddress?: string } = {},
): Promise<number> {
  const useTls = attack.wrap === 'tls' || (attack.wrap === 'match' && to.tls);
  return new Promise((resolve) => {
    const tcp = tcpConnect({
      host: to.host,
      port: to.port,
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    const socket: Socket = useTls ? tlsConnect({ socket: tcp, rejectUnauthorized: false }) : tcp;
    tcp.on('error', () => {});
    let head = '';
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      tcp.destroy();
      const m = /^HTTP\/1\.[01] (\d{3}) /.exec(head);
      resolve(m ? Number(m[1]) : 0);
    };
    socket.once(useTls ? 'secureConnect' : 'connect', () => {
      if (attack.hold) socket.write(attack.bytes);
      else socket.end(attack.bytes);
    });
    socket.on('data', (d: Buffer) => {
      if (head.length < 64) head += d.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', done);
    timer = setTimeout(done, attack.hold ? 300 : (options.timeoutMs ?? 15_000));
  });
}

/**
 * `count` connections that never finish a request, spread over
 * `addresses` (local addresses on lo: each a separate peer), each sending
 * a byte a second of an endless header (after the TLS handshake on a TLS
 * port, or nothing at all for every other one there: a handshake never
 * finished). A connection the server closes is opened again after `retryMs`.
 */
export function holdConnections(
  to: Target,
  options: { count: number; addresses: string[]; retryMs?: number },
): { held(): number; opened(): number; stop(): void } {
  let held = 0;
  let opened = 0;
  let stopped = false;
  const sockets = new Set<Socket>();
  const open = (i: number) => {
    if (stopped) return;
    const localAddress = options.addresses[i % options.addresses.length]!;
    const silent = to.tls && i % 2 === 0;
    const tcp = tcpConnect({ host: to.host, port: to.port, localAddress });
    tcp.on('error', () => {});
    const socket: Socket = to.tls && !silent ? tlsConnect({ socket: tcp, rejectUnauthorized: false }) : tcp;
    sockets.add(socket);
    sockets.add(tcp);
    opened++;
    let timer: NodeJS.Timeout | undefined;
    let counted = false;
    socket.once(to.tls && !silent ? 'secureConnect' : 'connect', () => {
      held++;
      counted = true;
      if (silent) return;
      const line = Buffer.from(`GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Slow: ${'s'.repeat(10_000)}`);
      let at = 0;
      timer = setInterval(() => socket.write(line.subarray(at, ++at)), 1_000);
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      clearInterval(timer);
      sockets.delete(socket);
      sockets.delete(tcp);
      tcp.destroy();
      if (counted) held--;
      setTimeout(() => open(i), options.retryMs ?? 100);
    });
  };
  // Spread over 5 s, so the server's timeouts do not cut them all in the same second.
  for (let i = 0; i < options.count; i++) setTimeout(() => open(i), (i * 5_000) / options.count);
  return {
    held: () => held,
    opened: () => opened,
    stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
    },
  };
}

/** GET /healthz on a fresh connection every `everyMs`, as the kubelet probes. */
export function probeHealth(to: Target, everyMs = 250): { stop(): Promise<number[]> } {
  const latencies: number[] = [];
  let stopped = false;
  const once = () =>
    new Promise<void>((resolve) => {
      const started = performance.now();
      const get = to.tls ? httpsGet : httpGet;
      const req = get(
        { host: to.host, port: to.port, path: '/healthz', agent: false, rejectUnauthorized: false, timeout: 5_000 },
        (res) => {
          res.resume();
          res.on('end', () => {
            latencies.push(res.statusCode === 200 ? performance.now() - started : Infinity);
            resolve();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        latencies.push(Infinity);
        resolve();
      });
    });
  const loop = (async () => {
    while (!stopped) {
      await once();
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return latencies;
    },
  };
}

export interface CorpusEntry {
  name: string;
  /** The bytes, as a JSON string (\r\n, \u0000 escapes; code points above 0xff are sent as UTF-8). */
  request: string;
  wrap?: Attack['wrap'];
  /** The status the plain-HTTP server answers with; 0: the connection closes without an answer. */
  status: number;
}

/** The known-bad requests (test/http/corpus/known-bad.json): every input that once broke something stays there. */
export function corpus(): CorpusEntry[] {
  return JSON.parse(readFileSync(new URL('./corpus/known-bad.json', import.meta.url), 'utf8')) as CorpusEntry[];
}

export function corpusAttack(e: CorpusEntry): Attack {
  return {
    bytes: Buffer.from(e.request, /[\u0100-\uffff]/.test(e.request) ? 'utf8' : 'latin1'),
    wrap: e.wrap ?? 'match',
    hold: false,
  };
}

/** Resident set size of a process, bytes. */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** Runs `fn` over `items` with at most `concurrency` at once. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
