/**
 * Kubernetes-mode fixtures: a real control plane (test/cluster), a Node
 * object, and "the kubelet's part": a Pod created in the API with
 * spec.nodeName, and its kubelet-shaped cgroup made for the Pod's uid.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type TestCluster } from '../cluster/cluster.ts';
import type { AfterHook } from './cleanup.ts';
import { randomSuffix } from './cleanup.ts';
import type { TestCgroup } from './cgroups.ts';

export async function clusterWithNode(t: AfterHook): Promise<{ cluster: TestCluster; node: string }> {
  const cluster = await startCluster();
  t.after(() => cluster.down());
  const node = `podmeter-test-node-${randomSuffix()}`;
  await must(
    cluster.kubectl(['create', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }),
    }),
  );
  return { cluster, node };
}

export async function must(r: Promise<{ code: number; stdout: string; stderr: string }>): Promise<string> {
  const { code, stdout, stderr } = await r;
  if (code !== 0) throw new Error(`kubectl failed (${code}): ${stderr}`);
  return stdout;
}

/** Creates a Pod bound to `node` (with `annotations`, if given) and its systemd-driver burstable pod cgroup with one container scope. */
export async function makePod(
  cluster: TestCluster,
  root: TestCgroup,
  options: { name: string; namespace: string; node: string; annotations?: Record<string, string> },
) {
  const manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: options.name,
      namespace: options.namespace,
      ...(options.annotations ? { annotations: options.annotations } : {}),
    },
    spec: {
      nodeName: options.node,
      containers: [{ name: 'app', image: 'example.invalid/app', resources: { requests: { cpu: '10m' } } }],
    },
  };
  const created = JSON.parse(
    await must(cluster.kubectl(['create', '-o', 'json', '-f', '-'], { input: JSON.stringify(manifest) })),
  ) as { metadata: { uid: string } };
  const uid = created.metadata.uid;
  const pod = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll('-', '_')}.slice`;
  const container = root.child(`${pod}/cri-containerd-${'ab'.repeat(32)}.scope`);
  return { uid, container, podCgroup: join(root.path, pod) };
}

export async function annotations(
  cluster: TestCluster,
  kind: string,
  name: string,
  namespace?: string,
): Promise<Record<string, string>> {
  const ns = namespace ? ['-n', namespace] : [];
  const out = await must(cluster.kubectl(['get', kind, name, ...ns, '-o', 'jsonpath={.metadata.annotations}']));
  return out.trim() === '' ? {} : (JSON.parse(out) as Record<string, string>);
}

/** A kubeconfig that authenticates with `token` (a ServiceAccount's). */
export function tokenKubeconfig(cluster: TestCluster, token: string, dir: string): string {
  const path = join(dir, 'kubeconfig-token.yaml');
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: cluster.server, 'certificate-authority': cluster.caFile } }],
      users: [{ name: 'u', user: { token } }],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'c',
    }),
  );
  return path;
}
