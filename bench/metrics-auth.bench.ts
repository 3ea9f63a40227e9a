/**
 * What --metrics-auth kubernetes costs a scrape and the agent's memory: the
 * same agent (Kubernetes mode, 500 pod cgroups) run with --metrics-auth none
 * and then kubernetes, scraped 300 times over one keep-alive connection (as
 * Prometheus does) with a token bound to a /metrics reader role; prints the
 * first scrape on a new connection (with kubernetes: the TLS handshake), one
 * with a token not seen before (the TokenReview and SubjectAccessReview),
 * p50/p99 of the others (cached decisions) and the agent's RSS. Needs root
 * and the test control plane (test/cluster).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
import { startAgentProcess } from '../test/helpers/agent.ts';
import { waitFor } from '../test/helpers/poll.ts';
import { clusterWithNode, must } from '../test/helpers/kubeCluster.ts';

const PODS = 500;
const SCRAPES = 300;
const cleanups: (() => unknown)[] = [];
const root = makeTestCgroup(undefined);

function scrape(url: string, token: string, agent: HttpAgent): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const secure = url.startsWith('https:');
    const req = (secure ? httpsRequest : httpRequest)(
      `${url}/metrics`,
      { agent, headers: { authorization: `Bearer ${token}` }, ...(secure ? { rejectUnauthorized: false } : {}) },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(performance.now() - started)
            : reject(new Error(`/metrics: ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

try {
  const { cluster, node } = await clusterWithNode({ after: (fn: () => unknown) => void cleanups.push(fn) });
  await must(
    cluster.kubectl(['create', 'clusterrole', 'bench-metrics-reader', '--verb=get', '--non-resource-url=/metrics']),
  );
  await must(cluster.kubectl(['create', 'serviceaccount', 'prometheus', '-n', 'default']));
  await must(
    cluster.kubectl([
      'create',
      'clusterrolebinding',
      'bench-metrics-reader',
      '--clusterrole=bench-metrics-reader',
      '--serviceaccount=default:prometheus',
    ]),
  );
  const newToken = async () => (await must(cluster.kubectl(['create', 'token', 'prometheus', '-n', 'default']))).trim();
  const token = await newToken();
  const qos = root.child('kubepods.slice/kubepods-besteffort.slice');
  for (let i = 0; i < PODS; i++)
    mkdirSync(`${qos.path}/kubepods-besteffort-pod${randomUUID().replaceAll('-', '_')}.slice`);

  const results: Record<string, unknown>[] = [];
  for (const mode of ['none', 'kubernetes']) {
    const agent = await startAgentProcess(undefined, {
      cgroupRoot: root.path,
      args: ['--discover', 'pods', '--kubeconfig', cluster.kubeconfig, '--node-name', node, '--metrics-auth', mode],
    });
    try {
      const keepAlive =
        mode === 'none'
          ? new HttpAgent({ keepAlive: true, maxSockets: 1 })
          : new HttpsAgent({ keepAlive: true, maxSockets: 1 });
      await waitFor(
        'all attached',
        async () => {
          const text = await new Promise<string>((resolve, reject) => {
            const secure = agent.url.startsWith('https:');
            const req = (secure ? httpsRequest : httpRequest)(
              `${agent.url}/metrics`,
              { headers: { authorization: `Bearer ${token}` }, ...(secure ? { rejectUnauthorized: false } : {}) },
              (res) => {
                let body = '';
                res
                  .setEncoding('utf8')
                  .on('data', (d: string) => (body += d))
                  .on('end', () => resolve(body));
              },
            );
            req.on('error', reject);
            req.end();
          });
          const attached = Number(/^podmeter_attached_cgroups (\d+)/m.exec(text)?.[1] ?? 0);
          return attached >= PODS ? true : undefined;
        },
        120_000,
      );
      const first = await scrape(agent.url, token, keepAlive); // the token's decision is cached by the wait above
      const review = await scrape(agent.url, await newToken(), keepAlive);
      const times: number[] = [];
      for (let i = 0; i < SCRAPES; i++) times.push(await scrape(agent.url, token, keepAlive));
      times.sort((a, b) => a - b);
      const rssMiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
      const result = {
        bench: 'metrics-auth',
        mode,
        pods: PODS,
        firstMs: first,
        newTokenMs: review,
        p50Ms: percentile(times, 50),
        p99Ms: percentile(times, 99),
        rssMiB,
      };
      console.log(
        `--metrics-auth ${mode}: first scrape on a new connection ${first.toFixed(1)} ms, a new token ${review.toFixed(1)} ms, then p50 ${result.p50Ms.toFixed(2)} ms p99 ${result.p99Ms.toFixed(2)} ms over ${SCRAPES}; RSS ${rssMiB.toFixed(1)} MiB`,
      );
      results.push(result);
      keepAlive.destroy();
    } finally {
      await agent.stop();
    }
  }
  console.log(JSON.stringify(results));
} finally {
  for (const fn of cleanups.reverse()) await fn();
  await root.remove();
}
