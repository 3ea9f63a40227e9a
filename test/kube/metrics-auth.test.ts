/**
 * --metrics-auth kubernetes against the real kube-apiserver (TokenReview,
 * SubjectAccessReview, RBAC), with the chart's own RBAC (helm template of
 * helm/podmeter, applied as rendered): the agent and the operator serve
 * HTTPS; /healthz and /readyz answer without a token; /metrics and the API
 * answer 401 without a token or with a bad one, 403 for a token whose user
 * may not get the path, and 200 for the chart's metrics-reader (Prometheus)
 * and api-reader (podmeter top, maps) bindings. With the apiserver stopped a
 * decision not cached is 503 and a cached allow keeps working for its TTL;
 * the agent on a host without a Kubernetes API refuses the flag (exit 2).
 *
 * Needs: root (the agent attaches programs), the test control plane tools.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { run } from '../cluster/cluster.ts';
import { render, toolsDir, type K8sObject } from '../helm/chart.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { randomSuffix, TEST_PREFIX } from '../helpers/cleanup.ts';
import { must, tokenKubeconfig } from '../helpers/kubeCluster.ts';
import { apply, operatorCluster, OPERATOR_NS, startOperator } from '../helpers/operatorCluster.ts';
import { PODMETER } from '../helpers/podmeter.ts';

interface Answer {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

/** One GET over HTTPS, certificate unverified (what is checked here is the token, not the certificate). */
function get(base: string, path: string, token?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        rejectUnauthorized: false,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(30_000),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The chart's RBAC and ServiceAccounts as `helm template` renders them with these reader bindings. */
async function chartRbac(): Promise<K8sObject[]> {
  const objects = await render(await toolsDir(), {
    set: [
      'readers.metrics[0].name=prometheus',
      'readers.metrics[0].namespace=monitoring',
      'readers.api[0].name=node-admin',
      'readers.api[0].namespace=podmeter',
    ],
  });
  return objects.filter((o) =>
    ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(o.kind),
  );
}

test("--metrics-auth kubernetes: 401 without a valid token, 403 without RBAC, 200 for the chart's readers; probes open; 503 when the API is away", async (t) => {
  const oc = await operatorCluster(t);
  const { cluster } = oc;
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const node = `podmeter-test-node-${randomSuffix()}`;
  await must(cluster.kubectl(['create', 'namespace', 'monitoring']));
  await apply(oc, [{ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }, ...(await chartRbac())]);
  for (const [name, ns] of [
    ['prometheus', 'monitoring'],
    ['node-admin', OPERATOR_NS],
    ['nobody', OPERATOR_NS],
  ] as const) {
    await must(cluster.kubectl(['create', 'serviceaccount', name, '-n', ns]));
  }
  const token = async (name: string, ns = OPERATOR_NS) =>
    (await must(cluster.kubectl(['create', 'token', name, '-n', ns]))).trim();
  const prometheus = await token('prometheus', 'monitoring');
  const nodeAdmin = await token('node-admin');
  const nobody = await token('nobody');

  // The agent runs as the chart's agent ServiceAccount: only the chart's RBAC lets it review tokens.
  const agent = await startAgentProcess(t, {
    cgroupRoot: makeTestCgroup(t).path,
    args: [
      '--kubeconfig',
      tokenKubeconfig(cluster, await token('podmeter-agent'), dir),
      '--node-name',
      node,
      '--namespace',
      OPERATOR_NS,
      '--metrics-auth',
      'kubernetes',
    ],
  });
  assert.match(agent.url, /^https:\/\//, 'the agent serves HTTPS');
  const started = agent.logs.find((l) => l.msg?.toString().startsWith('HTTPS with Kubernetes token review'));
  assert.equal(started?.source, 'self-signed');

  await t.test('the agent: probes open, 401, 403, 200 by path and role', async () => {
    for (const path of ['/healthz', '/readyz'])
      assert.equal((await get(agent.url, path)).status, 200, `${path} without a token`);
    for (const path of ['/metrics', '/api/v1/cgroups', '/api/v1/maps', '/maps', '/nowhere']) {
      const answer = await get(agent.url, path);
      assert.equal(answer.status, 401, `${path} without a token`);
      assert.equal(answer.headers['www-authenticate'], 'Bearer realm="podmeter"');
    }
    assert.equal((await get(agent.url, '/metrics', 'not-a-token')).status, 401, 'a token the API does not know');
    assert.equal((await get(agent.url, '/metrics', `${prometheus}x`)).status, 401, 'a tampered token');
    const denied = await get(agent.url, '/metrics', nobody);
    assert.equal(denied.status, 403, 'a valid token without RBAC');
    assert.match(denied.body, /system:serviceaccount:podmeter:nobody.*may not get \/metrics/);
    const metrics = await get(agent.url, '/metrics', prometheus);
    assert.equal(metrics.status, 200, metrics.body);
    assert.match(metrics.body, /^# TYPE podmeter_attached_cgroups gauge$/m, 'real metrics');
    assert.equal(
      (await get(agent.url, '/api/v1/cgroups', prometheus)).status,
      403,
      'the metrics reader may not read the API',
    );
    // Kubernetes' default system:discovery role lets every authenticated user get /api/*: the agent's API must not count that.
    const discovery = await get(agent.url, '/api/v1/cgroups', nobody);
    assert.equal(discovery.status, 403, 'any valid token without podmeter RBAC');
    assert.match(discovery.body, /authorised as the non-resource URL \/podmeter\/api\/v1\/cgroups/);
    for (const path of ['/api/v1/cgroups', '/api/v1/maps', '/maps', '/metrics']) {
      // 503 until the first map inventory is taken, right after start.
      const answer = await waitFor(`api-reader: ${path}`, async () => {
        const got = await get(agent.url, path, nodeAdmin);
        return got.status === 503 && /inventory/.test(got.body) ? undefined : got;
      });
      assert.equal(answer.status, 200, `api-reader: ${path}: ${answer.body}`);
    }
  });

  await t.test(
    'podmeter top and maps on the node: work with --token/--token-file, say what to do without',
    async () => {
      const tokenFile = join(dir, 'token');
      writeFileSync(tokenFile, `${nodeAdmin}\n`);
      const top = await run(PODMETER, [
        'top',
        '--once',
        '--interval',
        '0.2',
        '--agent',
        agent.url,
        '--token-file',
        tokenFile,
      ]);
      assert.equal(top.code, 0, top.stderr);
      assert.match(top.stdout, /NAME\s+RX\/s\s+TX\/s/);
      const maps = await run(PODMETER, ['maps', '--json', '--agent', agent.url, '--token', nodeAdmin]);
      assert.equal(maps.code, 0, maps.stderr);
      assert.ok((JSON.parse(maps.stdout) as { totalBytes: number }).totalBytes > 0, "the agent's map inventory");

      const anonymous = await run(PODMETER, ['top', '--once', '--agent', agent.url]);
      assert.equal(anonymous.code, 1);
      assert.match(
        anonymous.stderr,
        /answered 401 Unauthorized: it checks Kubernetes tokens: pass --token or --token-file/,
      );
      const forbidden = await run(PODMETER, ['top', '--once', '--agent', agent.url, '--token', prometheus]);
      assert.equal(forbidden.code, 1);
      assert.match(forbidden.stderr, /answered 403 Forbidden: .*may not get \/api\/v1\/cgroups/);
      const plain = await run(PODMETER, [
        'top',
        '--once',
        '--agent',
        agent.url.replace('https:', 'http:'),
        '--token',
        nodeAdmin,
      ]);
      assert.equal(plain.code, 1, 'plain HTTP gets nothing from an HTTPS agent');
      assert.match(plain.stderr, /cannot reach the agent .*serves https: pass --agent https:\/\//);
    },
  );

  const operator = await startOperator(oc, {
    args: [
      '--kubeconfig',
      tokenKubeconfig(cluster, await token('podmeter-operator'), join(mkdtempSync(join(dir, 'op-')))),
      '--metrics-auth',
      'kubernetes',
    ],
  });

  await t.test('the operator: the same rules, with its own chart RBAC', async () => {
    assert.match(operator.url, /^https:\/\//);
    assert.equal((await get(operator.url, '/healthz')).status, 200);
    assert.equal((await get(operator.url, '/readyz')).status, 200);
    assert.equal((await get(operator.url, '/metrics')).status, 401);
    assert.equal((await get(operator.url, '/metrics', nobody)).status, 403);
    const metrics = await get(operator.url, '/metrics', prometheus);
    assert.equal(metrics.status, 200, metrics.body);
    assert.match(metrics.body, /^podmeter_operator_leader [01]$/m);
  });

  await t.test(
    'the apiserver stopped: a decision not cached is 503, a cached allow holds for its TTL, probes stay 200',
    async () => {
      const allowedAt = Date.now();
      assert.equal((await get(agent.url, '/metrics', prometheus)).status, 200);
      await cluster.stopApiserver();
      const tampered = nodeAdmin.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
      for (const path of ['/api/v1/cgroups', '/maps']) {
        const uncached = await get(agent.url, path, tampered);
        assert.equal(uncached.status, 503, uncached.body);
        assert.match(uncached.body, /cannot check the token with the Kubernetes API/);
      }
      assert.equal((await get(operator.url, '/metrics', tampered)).status, 503, 'the operator too');
      const cached = await get(agent.url, '/metrics', prometheus);
      // The allow was cached when allowedAt was taken; only a machine slower than its 60 s TTL sees it expire (then 503, never an unchecked 200).
      assert.equal(cached.status, Date.now() - allowedAt < 55_000 ? 200 : 503, cached.body);
      assert.equal((await get(agent.url, '/healthz')).status, 200);
      const outages = () => agent.logs.filter((l) => /cannot review tokens/.test(String(l.msg))).length;
      await waitFor('the outage logged', () => (outages() > 0 ? true : undefined));
      assert.equal(outages(), 1, 'the outage is logged once, not per request');
      await cluster.startApiserver();
      // A path not asked before with this token: a fresh review, not a cached allow.
      await waitFor(
        'reviews working again',
        async () => ((await get(agent.url, '/maps/chart.js', nodeAdmin)).status === 200 ? true : undefined),
        60_000,
      );
      await waitFor('the recovery logged', () =>
        agent.logs.some((l) => l.msg === 'token reviews work again') ? true : undefined,
      );
    },
  );
});

test('--metrics-auth kubernetes without a Kubernetes API: a usage error (exit 2) before the agent changes anything', (t) => {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bpffs = `/sys/fs/bpf/${TEST_PREFIX}${randomSuffix()}`;
  const r = spawnSync(
    PODMETER,
    [
      'agent',
      '--cgroup-root',
      makeTestCgroup(t).path,
      '--bpffs',
      bpffs,
      '--state-dir',
      dir,
      '--listen',
      '127.0.0.1:0',
      '--metrics-auth',
      'kubernetes',
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(r.status, 2, r.stderr);
  assert.match(
    r.stderr,
    /--metrics-auth kubernetes needs a Kubernetes API to review tokens \(--kubeconfig or an in-cluster service account\)/,
  );
  assert.equal(spawnSync('test', ['-e', bpffs]).status, 1, 'nothing pinned');
});
