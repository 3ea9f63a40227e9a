// A real Kubernetes control plane (etcd + kube-apiserver, no kubelet) for
// node:test tests, driven through the scripts beside this file.
//
//   const cluster = await startCluster();
//   t.after(() => cluster.down());
//   const r = await cluster.kubectl(['get', 'ns', '-o', 'json']);
//
// See test/cluster/README.md for what the control plane does and does not do.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (e.g. a manifest for `create -f -`). */
  input?: string;
  /** Authenticate with this bearer token instead of the admin's. */
  token?: string;
}

export interface TestCluster {
  name: string;
  /** Admin kubeconfig (static token in group system:masters). */
  kubeconfig: string;
  /** https://127.0.0.1:PORT */
  server: string;
  /** Directory with kube-apiserver, etcd, kubectl, helm, promtool. */
  binDir: string;
  /** /tmp/podmeter-test-cluster-NAME */
  dataDir: string;
  /** CA certificate that signed the apiserver's serving certificate. */
  caFile: string;
  /** The admin's bearer token. */
  token: string;
  kubectl(args: string[], opts?: KubectlOptions): Promise<RunResult>;
  /** Kills kube-apiserver only; etcd keeps the data. */
  stopApiserver(): Promise<void>;
  /** Starts kube-apiserver again on the same port with the same flags; waits for /readyz. */
  startApiserver(): Promise<void>;
  /** Stops everything and removes the data directory. Safe to call twice. */
  down(): Promise<void>;
}

export function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; inheritStderr?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', opts.inheritStderr ? 'inherit' : 'pipe'],
    });
    const { stdin, stdout: out } = child;
    if (!stdin || !out) throw new Error('spawn gave no stdio pipes');
    let stdout = '';
    let stderr = '';
    out.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ stdout, stderr, code: code ?? (signal ? 128 : 1) }));
    stdin.on('error', () => {}); // the child may exit without reading
    stdin.end(opts.input ?? '');
  });
}

async function script(name: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(path.join(here, name), args, env ? { env } : {});
  if (r.code !== 0) {
    throw new Error(`test/cluster/${name} ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** KEY=VALUE lines as written by `up` (values plain or bash-quoted with %q). */
export async function readState(file: string): Promise<Map<string, string>> {
  const state = new Map<string, string>();
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m?.[1] && m[2] !== undefined) state.set(m[1], m[2].replace(/\\(.)/g, '$1').replace(/^'(.*)'$/, '$1'));
  }
  return state;
}

/**
 * Starts a fresh cluster (building the binaries first if this machine has
 * none cached, which takes a long while once). If this process dies without
 * calling down(), a watchdog takes the cluster down.
 */
export async function startCluster(opts: { name?: string } = {}): Promise<TestCluster> {
  // Built separately with stderr shown: a cold build takes many minutes, and
  // a warm one prints nothing.
  const built = await run(path.join(here, 'build-tools'), [], { inheritStderr: true });
  if (built.code !== 0) throw new Error(`test/cluster/build-tools exited ${built.code}`);

  const env = { ...process.env, PODMETER_TEST_CLUSTER_OWNER_PID: String(process.pid) };
  const out = await script('up', opts.name ? [opts.name] : [], env);
  const kubeconfig = out.trimEnd().split('\n').pop() ?? '';
  const dataDir = path.dirname(kubeconfig);
  const state = await readState(path.join(dataDir, 'state.env'));
  const get = (key: string): string => {
    const v = state.get(key);
    if (!v) throw new Error(`${dataDir}/state.env has no ${key}`);
    return v;
  };
  const name = get('NAME');
  const binDir = get('BIN_DIR');
  const token = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();

  return {
    name,
    kubeconfig,
    server: get('SERVER'),
    binDir,
    dataDir,
    caFile: path.join(dataDir, 'pki', 'ca.crt'),
    token,
    kubectl(args, kopts = {}) {
      const auth = kopts.token !== undefined ? [`--token=${kopts.token}`] : [];
      return run(path.join(binDir, 'kubectl'), ['--kubeconfig', kubeconfig, ...auth, ...args], {
        ...(kopts.input !== undefined ? { input: kopts.input } : {}),
      });
    },
    async stopApiserver() {
      await script('apiserver', [name, 'stop']);
    },
    async startApiserver() {
      await script('apiserver', [name, 'start']);
    },
    async down() {
      await script('down', [name]);
    },
  };
}
