/**
 * The HTTP endpoint of the agent and the operator: /metrics, /healthz,
 * /readyz and the JSON API. Routes are plain functions; the server only
 * dispatches and reports errors. With `secure` (--metrics-auth kubernetes)
 * it serves HTTPS and asks a Gate (auth.ts) about every request except the
 * kubelet's probes; without it, plain HTTP exactly as before.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.ts';
import type { ServingTls } from './tls.ts';

export interface Reply {
  status?: number;
  type: string;
  body: string | Buffer;
  headers?: Readonly<Record<string, string>>;
}

/** Decides whether a request may see `path`: undefined lets it through, a Reply (401, 403, 503) answers instead. */
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

export class HttpServer {
  readonly #server: Server;
  readonly #routes = new Map<string, Route>();
  readonly #log: Logger;
  readonly #gate: Gate | undefined;
  readonly #tls: ServingTls | undefined;

  constructor(log: Logger, secure?: { tls: ServingTls; gate: Gate }) {
    this.#log = log;
    this.#gate = secure?.gate;
    this.#tls = secure?.tls;
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.#handle(req, res);
    // node:https is loaded by tls.ts, only with --metrics-auth kubernetes.
    this.#server = secure === undefined ? createServer(handler) : secure.tls.serve(handler);
  }

  /** 'https' with --metrics-auth kubernetes, else 'http'. */
  get scheme(): 'http' | 'https' {
    return this.#tls ? 'https' : 'http';
  }

  route(path: string, handler: Route): this {
    this.#routes.set(path, handler);
    return this;
  }

  /** Listens, failing with a clear message (EADDRINUSE, EACCES) before the agent changes anything. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use (another agent running?)' : err.message;
        reject(Object.assign(new Error(`--listen ${host}:${port}: cannot listen: ${why}`), { code: err.code, cause: err }));
      };
      this.#server.once('error', onError);
      this.#server.listen(port, host, () => {
        this.#server.off('error', onError);
        const addr = this.#server.address();
        resolve(typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : { host, port });
      });
    });
  }

  close(): Promise<void> {
    this.#tls?.stop();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const route = this.#routes.get(url.pathname);
    let reply: Reply;
    const denied = this.#gate && !OPEN_PATHS.has(url.pathname) ? await this.#check(req, url.pathname) : undefined;
    if (denied !== undefined) reply = denied;
    else if (req.method !== 'GET' && req.method !== 'HEAD') reply = text('method not allowed\n', 405);
    else if (route === undefined) reply = text(`not found; try ${[...this.#routes.keys()].join(' ')}\n`, 404);
    else {
      try {
        reply = await route(req, url);
      } catch (err) {
        this.#log.error({ err, path: url.pathname }, 'request failed');
        reply = text(`internal error: ${(err as Error).message}\n`, 500);
      }
    }
    res.writeHead(reply.status ?? 200, { ...reply.headers, 'content-type': reply.type });
    res.end(req.method === 'HEAD' ? undefined : reply.body);
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
