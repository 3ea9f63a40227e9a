// A test cluster with one real node (a qemu VM running systemd, containerd,
// runc and a kubelet) for node:test tests, driven through test/node/up and
// down. See test/node/README.md.
//
//   const node = await startNode();
//   t.after(() => node.down());
//   await node.helm(['install', ...]);
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readState, run, type KubectlOptions, type RunResult } from '../cluster/cluster.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface TestNode {
  /** The Node's name, also the name of its cluster (test/cluster). */
  name: string;
  /** Admin kubeconfig of the cluster. */
  kubeconfig: string;
  /** /tmp/podmeter-test-node-NAME: console.log, kube-controller-manager.log, ... */
  dataDir: string;
  /** test/cluster's tools: kubectl, helm, promtool. */
  clusterBin: string;
  kubectl(args: string[], opts?: KubectlOptions): Promise<RunResult>;
  /** kubectl that throws (with its stderr) on a non-zero exit; returns stdout. */
  must(args: string[], opts?: KubectlOptions): Promise<string>;
  helm(args: string[]): Promise<RunResult>;
  /**
   * The base URL (http://127.0.0.1:PORT) of the HTTP API of the node's Prometheus
   * (kube-prometheus-stack.yaml, run by the Prometheus Operator), once it is ready:
   * test/node/prometheus.
   */
  prometheus(): Promise<string>;
  /** Stops the VM, the controllers and the cluster; removes everything. Safe to call twice. */
  down(): Promise<void>;
}

/**
 * Starts a fresh cluster with a node VM (building tools, root filesystem and
 * images first where this machine has none cached). Stage lines go to this
 * process's stderr. If this process dies without calling down(), a watchdog
 * takes it all down.
 */
export async function startNode(opts: { name?: string } = {}): Promise<TestNode> {
  const name = opts.name ?? `podmeter-vm-${Math.random().toString(16).slice(2, 8)}`;
  const env = { ...process.env, PODMETER_TEST_NODE_OWNER_PID: String(process.pid) };
  const up = await run(path.join(here, 'up'), [name], { env, inheritStderr: true });
  if (up.code !== 0) throw new Error(`test/node/up ${name} exited ${up.code} (its stderr is above)`);
  const kubeconfig = up.stdout.trimEnd().split('\n').pop() ?? '';
  const dataDir = `/tmp/podmeter-test-node-${name}`;
  const state = await readState(path.join(dataDir, 'state.env'));
  const clusterBin = state.get('CLUSTER_BIN');
  if (!clusterBin) throw new Error(`${dataDir}/state.env has no CLUSTER_BIN`);
  const kubectl = (args: string[], kopts: KubectlOptions = {}): Promise<RunResult> => {
    const auth = kopts.token !== undefined ? [`--token=${kopts.token}`] : [];
    return run(path.join(clusterBin, 'kubectl'), ['--kubeconfig', kubeconfig, ...auth, ...args], {
      ...(kopts.input !== undefined ? { input: kopts.input } : {}),
    });
  };
  return {
    name,
    kubeconfig,
    dataDir,
    clusterBin,
    kubectl,
    async must(args, kopts) {
      const r = await kubectl(args, kopts);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    },
    helm(args) {
      return run(path.join(clusterBin, 'helm'), ['--kubeconfig', kubeconfig, ...args]);
    },
    async prometheus() {
      const r = await run(path.join(here, 'prometheus'), [name]);
      if (r.code !== 0) throw new Error(`test/node/prometheus ${name} exited ${r.code}:\n${r.stderr}`);
      return r.stdout.trimEnd().split('\n').pop() ?? '';
    },
    async down() {
      const r = await run(path.join(here, 'down'), [name]);
      if (r.code !== 0) throw new Error(`test/node/down ${name} exited ${r.code}:\n${r.stderr}`);
    },
  };
}
