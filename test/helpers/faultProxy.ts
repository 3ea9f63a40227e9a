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
 *     .connections   connections accepted so far
 *     .close()       after the test and on SIGINT/SIGTERM
 *   proxiedKubeconfig(cluster, proxy, dir): the admin kubeconfig with the proxy as server
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterOrSignal, type AfterHook } from './cleanup.ts';
import type { TestCluster } from '../cluster/cluster.ts';

export interface FaultProxy {
  url: string;
  readonly connections: number;
  stall(): void;
  delay(ms: number): void;
  close(): Promise<void>;
}

export async function startFaultProxy(t: AfterHook | undefined, target: string): Promise<FaultProxy> {
  const { hostname, port } = new URL(target);
  const open = new Set<{ client: Socket; upstream: Socket }>();
  const stalled = new Set<{ client: Socket; upstream: Socket }>();
  let delayMs = 0;
  let accepted = 0;

  /** Forwards from → to, each chunk `delayMs` later, in order. */
  const pipe = (from: Socket, to: Socket) => {
    let chain = Promise.resolve();
    from.on('data', (chunk) => {
      const wait = delayMs;
      chain = chain.then(() => (wait > 0 ? new Promise((r) => setTimeout(r, wait)) : undefined)).then(() => {
        if (!to.destroyed) to.write(chunk);
      });
    });
    from.on('end', () => void chain.then(() => to.end()));
    from.on('error', () => to.destroy());
    from.on('close', () => void chain.then(() => to.destroy()));
  };

  const server = createServer((client) => {
    accepted++;
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
  return {
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
    close,
  };
}

export function proxiedKubeconfig(cluster: TestCluster, proxy: FaultProxy, dir: string): string {
  const path = join(dir, 'kubeconfig-proxied');
  const text = readFileSync(cluster.kubeconfig, 'utf8');
  if (!text.includes(cluster.server)) throw new Error(`${cluster.kubeconfig} does not name ${cluster.server}`);
  writeFileSync(path, text.replaceAll(cluster.server, proxy.url));
  return path;
}
