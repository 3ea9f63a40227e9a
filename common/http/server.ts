/**
 * The HTTP endpoint of the agent and the operator: /metrics, /healthz,
 * /readyz and the JSON API. Routes are plain functions; the server only
 * dispatches and reports errors. With `secure` (--metrics-auth kubernetes)
 * it serves HTTPS and asks a Gate (auth.ts) about every request except the
 * kubelet's probes; without it, plain HTTP exactly as before.
 *
 * Anyone who can reach the port may send anything (DESIGN.md, trust model):
 * what cannot be parsed, authorised or routed is a 4xx, an exception in a
 * route a 500 (logged once per kind), and never an exit. What one peer can
 * hold is bounded: header, request, keep-alive, idle and TLS handshake
 * timeouts, header size, requests per connection, connections per address
 * and in all; pipelined requests on a connection are answered one at a time,
 * so at most one answer per connection waits in memory. Memory the C
 * allocator keeps after a burst of connections closed goes back to the
 * kernel (common/memory.ts): RSS returns to what is in use.
 */
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.ts';
import { trimMemory } from '../memory.ts';
import { labelText, type TextMetric } from './exposition.ts';
import {
  CLIENT_ERROR_STATUS,
  DEFAULT_LIMITS,
  hasBody,
  hostError,
  REASON_OF_STATUS,
  REJECT_REASONS,
  requestUrl,
  type RejectReason,
  type ServerLimits,
} from './requests.ts';
import type { ServingTls } from './tls.ts';

export interface Reply {
  status?: number;
  type: string;
  body: string | Buffer;
  headers?: Readonly<Record<string, string>>;
}

/** Decides whether a request may see `path`: undefined lets it through, a Reply (401, 403, 429, 503) answers instead. */
export interface Gate {
  check(req: IncomingMessage, path: string): Reply | undefined | Promise<Reply | undefined>;
}

/** Paths the kubelet probes without credentials; everything else goes through the Gate. */
export const OPEN_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

export type Route = (req: IncomingMessage, url: URL) => Reply | Promise<Reply>;

export function json(value: unknown, status = 200): Reply {
  return { status, type: 'application/json', body: JSON.stringify(value, null, 2) + '\n' };
}

export function text(body: string, status = 200): Reply {
  return { status, type: 'text/plain; charset=utf-8', body };
}

interface Connection {
  socket: Socket;
  address: string;
  /** Requests being answered: such a connection is not closed to make room. */
  busy: number;
}

export class HttpServer {
  readonly #server: Server;
  readonly #routes = new Map<string, Route>();
  readonly #log: Logger;
  readonly #gate: Gate | undefined;
  readonly #tls: ServingTls | undefined;
  readonly #limits: ServerLimits;
  /** By `address port`, the longest idle first. */
  readonly #connections = new Map<string, Connection>();
  readonly #perAddress = new Map<string, number>();
  /** The answer in progress on each socket: the next pipelined request waits for it. */
  readonly #answering = new WeakMap<Duplex, Promise<void>>();
  readonly #rejected = new Map<RejectReason, number>();
  /** Kinds of route failure logged already (not every request's). */
  readonly #failures = new Set<string>();
  /** Connections closed since malloc's free memory was last given back, the trim waiting to run, and when the last ran. */
  #closedSinceTrim = 0;
  #trim: NodeJS.Timeout | undefined;
  #trimmedAt = 0;

  constructor(log: Logger, secure?: { tls: ServingTls; gate: Gate }, limits: Partial<ServerLimits> = {}) {
    this.#log = log;
    this.#gate = secure?.gate;
    this.#tls = secure?.tls;
    const l = (this.#limits = { ...DEFAULT_LIMITS, ...limits });
    const options: ServerOptions = {
      headersTimeout: l.headersTimeoutMs,
      requestTimeout: l.requestTimeoutMs,
      keepAliveTimeout: l.keepAliveTimeoutMs,
      maxHeaderSize: l.maxHeaderSize,
      // How often the header and request timeouts are checked (node's default, 30 s, would let a slow sender stay 3x longer).
      connectionsCheckingInterval: Math.min(1_000, l.headersTimeoutMs),
      // Checked here, with the other Host rules, and counted.
      requireHostHeader: false,
    };
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#enqueue(req, res);
    // node:https is loaded by tls.ts, only with --metrics-auth kubernetes.
    this.#server =
      secure === undefined
        ? createServer(options, handler)
        : secure.tls.serve(handler, { ...options, handshakeTimeout: l.handshakeTimeoutMs });
    this.#server.maxRequestsPerSocket = l.maxRequestsPerSocket;
    // Without a 'timeout' listener node destroys the idle socket.
    this.#server.setTimeout(l.idleTimeoutMs);
    this.#server.on('connection', (socket: Socket) => this.#admit(socket));
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
    // Without a listener node closes a CONNECT's socket without an answer.
    this.#server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      this.#count('method');
      this.#answerRaw(socket, 405, 'CONNECT is not served here\n');
    });
  }

  /** 'https' with --metrics-auth kubernetes, else 'http'. */
  get scheme(): 'http' | 'https' {
    return this.#tls ? 'https' : 'http';
  }

  route(path: string, handler: Route): this {
    this.#routes.set(path, handler);
    return this;
  }

  /** Requests and connections turned away so far, by reason: a counter for /metrics (read at scrape time). */
  rejectedMetric(name: string): TextMetric {
    return {
      name,
      help: `HTTP requests and connections turned away, by reason (${REJECT_REASONS.join(', ')}).`,
      type: 'counter',
      samples: (emit) => {
        for (const [reason, n] of this.#rejected) emit(labelText({ reason }), n);
      },
    };
  }

  /** Listens, failing with a clear message (EADDRINUSE, EACCES) before the agent changes anything. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use (another agent running?)' : err.message;
        reject(
          Object.assign(new Error(`--listen ${host}:${port}: cannot listen: ${why}`), { code: err.code, cause: err }),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen(port, host, () => {
        this.#server.off('error', onError);
        // After listening, an 'error' (e.g. EMFILE on accept) must not be thrown as an uncaught exception.
        this.#server.on('error', (err) => this.#log.warn({ err }, 'HTTP server error'));
        const addr = this.#server.address();
        resolve(typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : { host, port });
      });
    });
  }

  close(): Promise<void> {
    this.#tls?.stop();
    clearTimeout(this.#trim);
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
      // closeAllConnections leaves sockets that never became HTTP (a TLS handshake in progress).
      for (const c of this.#connections.values()) c.socket.destroy();
    });
  }

  #count(reason: RejectReason): void {
    this.#rejected.set(reason, (this.#rejected.get(reason) ?? 0) + 1);
  }

  /** A new TCP connection (before TLS): within the per-address cap, and room made in all if needed. */
  #admit(socket: Socket): void {
    const address = socket.remoteAddress;
    const key = `${address} ${socket.remotePort}`;
    if (address === undefined) return void socket.destroy(); // already gone
    const fromAddress = this.#perAddress.get(address) ?? 0;
    if (
      fromAddress >= this.#limits.maxConnectionsPerAddress ||
      (this.#connections.size >= this.#limits.maxConnections && !this.#closeOldestIdle())
    ) {
      this.#count('connections');
      this.#closed();
      return void socket.destroy();
    }
    this.#perAddress.set(address, fromAddress + 1);
    this.#connections.set(key, { socket, address, busy: 0 });
    socket.once('close', () => {
      this.#closed();
      this.#connections.delete(key);
      const n = (this.#perAddress.get(address) ?? 1) - 1;
      if (n === 0) this.#perAddress.delete(address);
      else this.#perAddress.set(address, n);
    });
  }

  /**
   * Counts a closed connection; after `trimAfterClosed` of them, malloc's free
   * pages go back to the kernel a second later (at most once per
   * `trimEveryMs`, also while they keep closing). Each connection's buffers (about 16 KiB plain, 50
   * KiB TLS) are freed when it closes, but glibc keeps them resident: without
   * this, the RSS of a server that once held hundreds of connections stays at
   * that peak (README, "Hostile input").
   */
  #closed(): void {
    this.#closedSinceTrim++;
    if (this.#closedSinceTrim < this.#limits.trimAfterClosed || this.#trim !== undefined) return;
    const wait = Math.max(1_000, this.#trimmedAt + this.#limits.trimEveryMs - Date.now());
    this.#trim = setTimeout(() => {
      this.#trim = undefined;
      this.#closedSinceTrim = 0;
      this.#trimmedAt = Date.now();
      trimMemory(this.#log);
    }, wait).unref();
  }

  /**
   * Closes the connection idle the longest (keep-alive, slow headers, a TLS
   * handshake): the kubelet's probe, a fresh connection answered in
   * milliseconds, is then never the one that waits.
   */
  #closeOldestIdle(): boolean {
    for (const c of this.#connections.values()) {
      if (c.busy > 0) continue;
      this.#count('connections');
      c.socket.destroy();
      this.#connections.delete(`${c.socket.remoteAddress} ${c.socket.remotePort}`);
      return true;
    }
    return false;
  }

  /** Marks the connection of `socket` busy (+1) or idle again (-1, then it is the newest idle). */
  #busy(socket: Duplex, delta: 1 | -1): void {
    const { remoteAddress, remotePort } = socket as Socket;
    const key = `${remoteAddress} ${remotePort}`;
    const c = this.#connections.get(key);
    if (c === undefined) return;
    c.busy += delta;
    if (c.busy === 0) {
      this.#connections.delete(key);
      this.#connections.set(key, c);
    }
  }

  /**
   * What node's parser refused: our own status (431 for oversized headers),
   * then the connection is closed. node:https reports a failed TLS handshake
   * here too (plain bytes on the TLS port, a handshake timeout): there is no
   * channel to answer on.
   */
  #clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (/^ERR_(SSL|TLS)_/.test(err.code ?? '')) {
      this.#count('tls');
      return void socket.destroy();
    }
    const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? 400;
    this.#count(status === 431 ? 'headers_too_large' : status === 408 ? 'timeout' : 'malformed');
    if (err.code === 'ECONNRESET') return void socket.destroy();
    // Answers to requests parsed before the bad bytes (a pipeline, a GET's broken body) go out first, then the connection closes.
    const pending = this.#answering.get(socket);
    if (pending !== undefined) return void pending.then(() => socket.destroy());
    this.#answerRaw(
      socket,
      status,
      `${STATUS_CODES[status]}: ${status === 400 ? 'the request cannot be parsed' : status === 431 ? `request line and headers over ${this.#limits.maxHeaderSize} bytes` : 'sent too slowly'}\n`,
    );
  }

  /** A whole answer written on the socket itself (no HTTP parser behind it any more), then closed. */
  #answerRaw(socket: Duplex, status: number, body: string): void {
    if (!socket.writable) return void socket.destroy();
    const head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`;
    socket.end(head + body, () => socket.destroy());
  }

  /** Answers pipelined requests of one connection in turn: at most one answer per connection in memory. */
  #enqueue(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const answered = (this.#answering.get(socket) ?? Promise.resolve()).then(() => this.#answer(req, res));
    this.#answering.set(socket, answered);
    void answered.then(() => {
      if (this.#answering.get(socket) === answered) this.#answering.delete(socket);
    });
  }

  /** Never rejects: every failure is an answer (a 500 at worst) or a closed connection. */
  async #answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (res.destroyed || req.socket.destroyed) return; // the peer left while earlier requests were answered
    this.#busy(req.socket, 1);
    const done = new Promise<void>((resolve) => res.once('close', resolve));
    let where = 'request';
    try {
      const { reply, route } = await this.#reply(req);
      if (route !== undefined) where = route;
      // A body we did not read (GET with a body, a POST): close rather than read it.
      const unread = hasBody(req) ? { connection: 'close' } : {};
      res.writeHead(reply.status ?? 200, {
        ...reply.headers,
        ...unread,
        'content-type': reply.type,
        'content-length': Buffer.byteLength(reply.body),
      });
      res.end(req.method === 'HEAD' ? undefined : reply.body);
    } catch (err) {
      this.#failed(err, where);
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end(`internal error: ${(err as Error)?.message ?? String(err)}\n`);
      }
    }
    await done;
    this.#busy(req.socket, -1);
  }

  /** The answer to one request: refusals first (cheapest first, the Gate last), then the route's. */
  async #reply(req: IncomingMessage): Promise<{ reply: Reply; route?: string }> {
    const refuse = (reply: Reply) => {
      this.#count(REASON_OF_STATUS[reply.status ?? 200] ?? 'malformed');
      return { reply };
    };
    const url = requestUrl(req);
    if (typeof url === 'string') return refuse(text(`Bad Request: ${url}\n`, 400));
    if (req.httpVersionMajor !== 1)
      return refuse(text(`Bad Request: HTTP/${req.httpVersion} is not served here (HTTP/1.1 is)\n`, 400));
    const hostProblem = hostError(req);
    if (hostProblem !== undefined) return refuse(text(`Bad Request: ${hostProblem}\n`, 400));
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return refuse({ ...text('Method Not Allowed: only GET and HEAD\n', 405), headers: { allow: 'GET, HEAD' } });
    if (hasBody(req)) return refuse(text(`Bad Request: a ${req.method} request has no body\n`, 400));
    const path = url.pathname;
    if (this.#gate !== undefined && !OPEN_PATHS.has(path)) {
      const denied = await this.#check(req, path);
      if (denied !== undefined) return refuse(denied);
    }
    const route = this.#routes.get(path);
    if (route === undefined) return refuse(text(`not found; try ${[...this.#routes.keys()].join(' ')}\n`, 404));
    return { reply: await route(req, url), route: path };
  }

  /** Logs the first failure of each kind (route and error class), counts them all. */
  #failed(err: unknown, where: string): void {
    this.#count('internal');
    const e = err as NodeJS.ErrnoException | undefined;
    const kind = `${where} ${e?.name ?? typeof err} ${e?.code ?? ''}`;
    if (this.#failures.has(kind) || this.#failures.size >= 100) return;
    this.#failures.add(kind);
    this.#log.error(
      { err, path: where },
      'request failed (further failures of this kind are counted in the metrics, not logged)',
    );
  }

  async #check(req: IncomingMessage, path: string): Promise<Reply | undefined> {
    try {
      return await this.#gate?.check(req, path);
    } catch (err) {
      this.#log.error({ err, path }, 'authorization failed');
      return text(`cannot authorize the request: ${(err as Error).message}\n`, 503);
    }
  }
}
