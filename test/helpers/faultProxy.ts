/**
 * A TCP proxy in front of the test apiserver that injects network faults
 * without terminating TLS (the client still checks the apiserver's
 * certificate, issued for 127.0.0.1): point a kubeconfig at it with
 * proxiedKubeconfig().
 *
 *   startFaultProxy(t, target 'https://host:port'): FaultProxy
 *     .url           https://127.0.0.1:<port>
 *     .stall()       every open connection goes silent: no byte forwarded either
 *                    way, no FIN, no RST (a stalled middlebox; new connections still pass)
 *     .delay(ms)     every chunk, both ways, forwarded `ms` later (0: no delay)
 *     .block(on)     the apiserver unreachable: open connections stall, new ones are closed at once
 *     .connections   connections accepted so far
 *     .close()       after the test and on SIGINT/SIGTERM
 *   proxiedKubeconfig(cluster, proxy, dir): the admin kubeconfig with the proxy as server
 *
 *   startHttpFaultProxy(t, cluster, dir): HttpFaultProxy (see below): terminates TLS
 *     and answers chosen requests itself (429 with Retry-After, 500).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterOrSignal, type AfterHook } from './cleanup.ts';
import type { TestCluster } from '../cluster/cluster.ts';

export interface FaultProxy {
  url: string;
  readonly connections: number;
  stall(): void;
  delay(ms: number): void;
  block(on: boolean): void;
  close(): Promise<void>;
}

export async function startFaultProxy(t: AfterHook | undefined, target: string): Promise<FaultProxy> {
  const { hostname, port } = new URL(target);
  const open = new Set<{ client: Socket; upstream: Socket }>();
  const stalled = new Set<{ client: Socket; upstream: Socket }>();
  let delayMs = 0;
  let blocked = false;
  let accepted = 0;

  /** Forwards from → to, each chunk `delayMs` later, in order. */
  const pipe = (from: Socket, to: Socket) => {
    let chain = Promise.resolve();
    from.on('data', (chunk) => {
      const wait = delayMs;
      chain = chain
        .then(() => (wait > 0 ? new Promise((r) => setTimeout(r, wait)) : undefined))
        .then(() => {
          if (!to.destroyed) to.write(chunk);
        });
    });
    from.on('end', () => void chain.then(() => to.end()));
    from.on('error', () => to.destroy());
    from.on('close', () => void chain.then(() => to.destroy()));
  };

  const server = createServer((client) => {
    accepted++;
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname.replace(/^\[|\]$/g, ''));
    const pair = { client, upstream };
    open.add(pair);
    client.on('close', () => open.delete(pair));
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };

  const close = afterOrSignal(t, async () => {
    for (const { client, upstream } of [...open, ...stalled]) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise((resolve) => server.close(resolve));
  });
  const proxy: FaultProxy = {
    url: `https://127.0.0.1:${address.port}`,
    get connections() {
      return accepted;
    },
    stall() {
      for (const pair of open) {
        const { client, upstream } = pair;
        // Stop reading both sides (the kernel's buffers fill, TCP stays open) and forget the pair.
        client.pause();
        upstream.pause();
        client.removeAllListeners('data');
        upstream.removeAllListeners('data');
        stalled.add(pair);
      }
      open.clear();
    },
    delay(ms: number) {
      delayMs = ms;
    },
    block(on: boolean) {
      blocked = on;
      if (on) proxy.stall();
    },
    close,
  };
  return proxy;
}

export function proxiedKubeconfig(cluster: TestCluster, proxy: FaultProxy, dir: string): string {
  const path = join(dir, 'kubeconfig-proxied');
  const text = readFileSync(cluster.kubeconfig, 'utf8');
  if (!text.includes(cluster.server)) throw new Error(`${cluster.kubeconfig} does not name ${cluster.server}`);
  writeFileSync(path, text.replaceAll(cluster.server, proxy.url));
  return path;
}

/** One request the HTTP fault proxy saw: when, what, and what it answered (its own fault or the apiserver's status). */
export interface ProxiedRequest {
  at: number;
  method: string;
  path: string;
  status: number;
  injected: boolean;
}

export interface HttpFault {
  status: number;
  /** Sent as Retry-After (seconds). */
  retryAfterS?: number;
  /** Which requests get the fault (default: all). */
  match?: (method: string, path: string) => boolean;
}

export interface HttpFaultProxy {
  url: string;
  /** A kubeconfig with the admin token, the proxy as server and its own CA. */
  kubeconfig: string;
  requests: ProxiedRequest[];
  /** Answer matching requests with this status instead of forwarding them (undefined: forward all). */
  fault(f: HttpFault | undefined): void;
  close(): Promise<void>;
}

/**
 * startHttpFaultProxy(t, cluster, dir): an HTTPS proxy that terminates TLS
 * with its own self-signed certificate for 127.0.0.1 (openssl) and forwards
 * each request to the apiserver (watch streams included), or answers it with
 * an injected status (429 with Retry-After, 500, ...).
 */
export async function startHttpFaultProxy(
  t: AfterHook | undefined,
  cluster: TestCluster,
  dir: string,
): Promise<HttpFaultProxy> {
  const key = join(dir, 'proxy.key');
  const cert = join(dir, 'proxy.crt');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  const target = new URL(cluster.server);
  const ca = readFileSync(cluster.caFile);
  const requests: ProxiedRequest[] = [];
  let current: HttpFault | undefined;
  const server = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const record = (status: number, injected: boolean) =>
      requests.push({ at: Date.now(), method, path, status, injected });
    const f = current;
    if (f !== undefined && (f.match?.(method, path.split('?')[0]!) ?? true)) {
      record(f.status, true);
      req.resume();
      res.writeHead(f.status, {
        'content-type': 'application/json',
        ...(f.retryAfterS !== undefined ? { 'retry-after': String(f.retryAfterS) } : {}),
      });
      res.end(
        JSON.stringify({
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Failure',
          code: f.status,
          reason: f.status === 429 ? 'TooManyRequests' : 'InternalError',
          message: 'injected by the test proxy',
        }),
      );
      return;
    }
    const up = httpsRequest(
      { host: target.hostname, port: target.port, method, path, headers: { ...req.headers, host: target.host }, ca },
      (upRes) => {
        record(upRes.statusCode ?? 0, false);
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const kubeconfig = join(dir, 'kubeconfig-http-proxy');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: url, 'certificate-authority': cert } }],
      users: [{ name: 'u', user: { token: cluster.token } }],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'c',
    }),
  );
  const close = afterOrSignal(t, async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return {
    url,
    kubeconfig,
    requests,
    fault(f) {
      current = f;
    },
    close,
  };
}
