/**
 * The agent's HTTP endpoint: /metrics, /healthz, /readyz and the JSON API.
 * Routes are plain functions; the server only dispatches and reports errors.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.ts';

export interface Reply {
  status?: number;
  type: string;
  body: string | Buffer;
}

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

  constructor(log: Logger) {
    this.#log = log;
    this.#server = createServer((req, res) => void this.#handle(req, res));
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
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const route = this.#routes.get(url.pathname);
    let reply: Reply;
    if (req.method !== 'GET' && req.method !== 'HEAD') reply = text('method not allowed\n', 405);
    else if (route === undefined) reply = text(`not found; try ${[...this.#routes.keys()].join(' ')}\n`, 404);
    else {
      try {
        reply = await route(req, url);
      } catch (err) {
        this.#log.error({ err, path: url.pathname }, 'request failed');
        reply = text(`internal error: ${(err as Error).message}\n`, 500);
      }
    }
    res.writeHead(reply.status ?? 200, { 'content-type': reply.type });
    res.end(req.method === 'HEAD' ? undefined : reply.body);
  }
}
