/**
 * How podmeter reaches the API server (common/kube/connection.ts), against
 * the real test apiserver: the in-cluster service account (KUBERNETES_SERVICE_*
 * env, its CA, a token file that is re-read when the kubelet rotates it), a
 * kubeconfig with a relative tokenFile, and a kubeconfig whose user runs an
 * exec plugin (handed to client-node). Broken kubeconfigs fail with the file
 * and the reason.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startCluster } from '../cluster/cluster.ts';
import { KubeApi, isStatus } from '../../common/kube/api.ts';
import { inCluster, loadConnection } from '../../common/kube/connection.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/poll.ts';

const writeJson = (path: string, value: unknown) => writeFileSync(path, JSON.stringify(value));

test('connections: in-cluster with token rotation, tokenFile, exec plugin; broken kubeconfigs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  await t.test('broken kubeconfigs name the file and what is wrong', async () => {
    const path = join(dir, 'broken.yaml');
    writeFileSync(path, 'apiVersion: v1\nkind: Config\nclusters: []\n');
    await assert.rejects(loadConnection(path), new RegExp(`--kubeconfig '${path}': no current-context`));
    writeJson(path, { 'current-context': 'x', contexts: [{ name: 'x', context: { cluster: 'nope', user: 'u' } }] });
    await assert.rejects(loadConnection(path), /names cluster 'nope', which it does not define/);
    writeFileSync(path, '{ not: [yaml');
    await assert.rejects(loadConnection(path), /cannot be read as a kubeconfig/);
    await assert.rejects(loadConnection(join(dir, 'missing.yaml')), /cannot be read as a kubeconfig/);
    assert.equal(
      await loadConnection(undefined, join(dir, 'no-service-account')),
      undefined,
      'standalone without either',
    );
  });

  const cluster = await startCluster();
  t.after(() => cluster.down());
  const port = new URL(cluster.server).port;
  const canList = async (api: KubeApi) => (await api.get<{ items: unknown[] }>('/api/v1/namespaces')).items.length > 0;

  await t.test('in-cluster: env, CA and a token file re-read after rotation', async () => {
    const sa = join(dir, 'serviceaccount');
    rmSync(sa, { recursive: true, force: true });
    mkdirSync(sa);
    copyFileSync(cluster.caFile, join(sa, 'ca.crt'));
    writeFileSync(join(sa, 'namespace'), 'podmeter\n');
    writeFileSync(join(sa, 'token'), 'not-a-valid-token\n');
    const conn = inCluster(sa, { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, 200);
    assert.equal(conn.server, `https://127.0.0.1:${port}`);
    assert.equal(conn.namespace, 'podmeter');
    const api = new KubeApi(conn);
    await assert.rejects(api.get('/api/v1/namespaces'), (err) => isStatus(err, 401));
    writeFileSync(join(sa, 'token'), `${cluster.token}\n`); // the kubelet rotated it
    assert.equal(
      await waitFor(
        'the new token is used',
        async () => (await canList(api).catch(() => undefined)) || undefined,
        10_000,
      ),
      true,
    );
    assert.throws(
      () => inCluster(sa, {}),
      /KUBERNETES_SERVICE_HOST\/KUBERNETES_SERVICE_PORT are not set; pass --kubeconfig/,
    );
  });

  await t.test('kubeconfig: a tokenFile relative to the file', async () => {
    const sub = join(dir, 'cfg');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, 'token'), cluster.token);
    copyFileSync(cluster.caFile, join(sub, 'ca.crt'));
    const path = join(sub, 'kubeconfig');
    writeJson(path, {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: cluster.server, 'certificate-authority': 'ca.crt' } }],
      users: [{ name: 'u', user: { tokenFile: 'token' } }],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u', namespace: 'shop' } }],
      'current-context': 'c',
    });
    const conn = (await loadConnection(path))!;
    assert.equal(conn.namespace, 'shop');
    assert.equal(await canList(new KubeApi(conn)), true);
  });

  await t.test('kubeconfig: an exec plugin (client-node runs it)', async () => {
    const plugin = join(dir, 'credential-plugin');
    const credential = {
      apiVersion: 'client.authentication.k8s.io/v1',
      kind: 'ExecCredential',
      status: { token: cluster.token },
    };
    writeFileSync(plugin, `#!/bin/sh\nprintf '%s' '${JSON.stringify(credential)}'\n`, { mode: 0o755 });
    const path = join(dir, 'kubeconfig-exec');
    writeJson(path, {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: cluster.server, 'certificate-authority': cluster.caFile } }],
      users: [
        {
          name: 'u',
          user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' } },
        },
      ],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'c',
    });
    assert.equal(await canList(new KubeApi((await loadConnection(path))!)), true);
    // Without the plugin's token the same request is refused: the plugin is what authenticated it.
    writeFileSync(
      plugin,
      `#!/bin/sh\nprintf '%s' '${JSON.stringify({ ...credential, status: { token: 'wrong' } })}'\n`,
      { mode: 0o755 },
    );
    await assert.rejects(new KubeApi((await loadConnection(path))!).get('/api/v1/namespaces'), (err) =>
      isStatus(err, 401),
    );
  });
});
