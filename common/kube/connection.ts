/**
 * Where the Kubernetes API is and how to authenticate to it: the in-cluster
 * service account, or a kubeconfig file. Loaded without
 * @kubernetes/client-node for the common cases (a bearer token or token
 * file, client certificates, a CA), because that library's generated models
 * cost the agent ~35 MiB of RSS (README, Performance) for nothing it uses.
 * A kubeconfig whose user needs more (an exec plugin, an auth provider,
 * basic auth) is handed to client-node, which knows them all.
 *
 *   loadConnection(kubeconfigPath | undefined) -> KubeConnection | undefined
 *     undefined: no --kubeconfig and no service account (standalone).
 *   connection.request() -> TLS agent and headers for the next request (a
 *     rotated service-account token is re-read, an exec plugin re-run by
 *     client-node when its credential expires).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** How long a read service-account token is used before the file is read again (kubelet rotates bound tokens well before they expire; client-go re-reads each minute too). */
const TOKEN_REREAD_MS = 60_000;

export interface KubeConnection {
  /** https://host:port (no trailing slash). */
  readonly server: string;
  /** The kubeconfig context's namespace, or the service account's. */
  readonly namespace: string | undefined;
  /** Where the credentials came from, for messages: 'in-cluster service account' or the kubeconfig path. */
  readonly source: string;
  /** The agent (keep-alive, TLS) and headers (Authorization) for the next request. */
  request(): Promise<{ agent: HttpAgent; headers: Record<string, string> }>;
}

/** The kubeconfig at `path`, else the in-cluster service account (`dir`), else undefined (standalone). */
export async function loadConnection(
  path: string | undefined,
  dir = SERVICE_ACCOUNT_DIR,
): Promise<KubeConnection | undefined> {
  if (path !== undefined) return fromKubeconfig(path);
  if (!existsSync(join(dir, 'token'))) return undefined;
  return inCluster(dir);
}

/** The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its CA and its (rotating) token, read again every `tokenRereadMs`. */
export function inCluster(
  dir = SERVICE_ACCOUNT_DIR,
  env: NodeJS.ProcessEnv = process.env,
  tokenRereadMs = TOKEN_REREAD_MS,
): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new Error(
      `a service account token is mounted at ${dir} but KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set; pass --kubeconfig`,
    );
  }
  const ca = readFileSync(join(dir, 'ca.crt'));
  const namespace = existsSync(join(dir, 'namespace'))
    ? readFileSync(join(dir, 'namespace'), 'utf8').trim()
    : undefined;
  const token = rereadEvery(join(dir, 'token'), tokenRereadMs);
  const agent = new HttpsAgent({ keepAlive: true, ca });
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    namespace,
    source: 'in-cluster service account',
    request: () => Promise.resolve({ agent, headers: { Authorization: `Bearer ${token()}` } }),
  };
}

interface NamedEntry<T> {
  name?: string;
  [key: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}
type Fields = Record<string, unknown>;

/** A kubeconfig file: its current context's cluster and user. */
async function fromKubeconfig(path: string): Promise<KubeConnection> {
  const fail = (why: string): never => {
    throw new Error(`--kubeconfig '${path}': ${why}`);
  };
  // js-yaml only for a kubeconfig file: in-cluster and standalone processes never load it (~0.5 MiB of heap).
  const { load: parseYaml } = await import('js-yaml');
  let doc: Fields;
  try {
    doc = (parseYaml(readFileSync(path, 'utf8')) ?? {}) as Fields;
  } catch (err) {
    return fail(`cannot be read as a kubeconfig: ${(err as Error).message}`);
  }
  const named = (list: unknown, name: unknown, field: 'cluster' | 'user' | 'context'): Fields | undefined =>
    ((Array.isArray(list) ? list : []) as NamedEntry<Fields>[]).find((e) => e?.name === name)?.[field];
  const contextName = doc['current-context'];
  if (!contextName) fail('no current-context (set one with kubectl config use-context)');
  const context =
    named(doc.contexts, contextName, 'context') ??
    fail(`current-context '${String(contextName)}' is not among its contexts`);
  const cluster =
    named(doc.clusters, context.cluster, 'cluster') ??
    fail(`context '${String(contextName)}' names cluster '${String(context.cluster)}', which it does not define`);
  const user = named(doc.users, context.user, 'user') ?? {};
  const server =
    typeof cluster.server === 'string'
      ? cluster.server.replace(/\/+$/, '')
      : fail(`cluster '${String(context.cluster)}' has no server`);
  const namespace = typeof context.namespace === 'string' ? context.namespace : undefined;

  const simple = Object.keys(user).every((k) => SIMPLE_USER_FIELDS.has(k));
  if (!simple) return viaClientNode(path, server, namespace);

  // Relative file paths in a kubeconfig are relative to the file.
  const file = (p: unknown) => (typeof p === 'string' ? (isAbsolute(p) ? p : join(dirname(path), p)) : undefined);
  const material = (dataKey: string, fileKey: string, from: Fields): Buffer | undefined => {
    if (typeof from[dataKey] === 'string') return Buffer.from(from[dataKey], 'base64');
    const f = file(from[fileKey]);
    if (f === undefined) return undefined;
    try {
      return readFileSync(f);
    } catch (err) {
      return fail(`cannot read ${fileKey} ${f}: ${(err as Error).message}`);
    }
  };
  const options: AgentOptions = { keepAlive: true };
  const ca = material('certificate-authority-data', 'certificate-authority', cluster);
  if (ca) options.ca = ca;
  const cert = material('client-certificate-data', 'client-certificate', user);
  const key = material('client-key-data', 'client-key', user);
  if (cert) options.cert = cert;
  if (key) options.key = key;
  if (cluster['insecure-skip-tls-verify'] === true) options.rejectUnauthorized = false;
  if (typeof cluster['tls-server-name'] === 'string') options.servername = cluster['tls-server-name'];
  const agent = server.startsWith('http:') ? new HttpAgent({ keepAlive: true }) : new HttpsAgent(options);
  const tokenFile = file(user.tokenFile);
  const token =
    typeof user.token === 'string'
      ? () => user.token as string
      : tokenFile
        ? rereadEvery(tokenFile, TOKEN_REREAD_MS)
        : undefined;
  return {
    server,
    namespace,
    source: path,
    request: () => {
      const headers: Record<string, string> = token ? { Authorization: `Bearer ${token()}` } : {};
      return Promise.resolve({ agent, headers });
    },
  };
}

/** User fields handled here; anything else (exec, auth-provider, username/password, impersonation) goes to client-node. */
const SIMPLE_USER_FIELDS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
]);

/** client-node's KubeConfig for users it alone knows (exec plugins, auth providers); loaded only then. */
async function viaClientNode(path: string, server: string, namespace: string | undefined): Promise<KubeConnection> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  const agents = new Map<string, HttpsAgent>();
  return {
    server,
    namespace,
    source: path,
    request: async () => {
      const opts: {
        ca?: Buffer;
        cert?: Buffer;
        key?: Buffer;
        rejectUnauthorized?: boolean;
        servername?: string;
        headers?: Record<string, string>;
      } = {};
      await kc.applyToHTTPSOptions(opts);
      const tls = {
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        rejectUnauthorized: opts.rejectUnauthorized,
        servername: opts.servername,
      };
      // One keep-alive agent per TLS identity (a plugin may hand out new client certificates).
      const id = JSON.stringify([
        tls.ca?.toString('base64'),
        tls.cert?.toString('base64'),
        tls.rejectUnauthorized,
        tls.servername,
      ]);
      let agent = agents.get(id);
      if (agent === undefined) {
        agent = new HttpsAgent({
          keepAlive: true,
          ...Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== undefined)),
        });
        agents.set(id, agent);
      }
      return { agent, headers: { ...opts.headers } };
    },
  };
}

/** The trimmed contents of `file`, read again once `everyMs` has passed (a rotated token is picked up). */
function rereadEvery(file: string, everyMs: number): () => string {
  let value = '';
  let readAt = -Infinity;
  return () => {
    if (Date.now() - readAt >= everyMs) {
      value = readFileSync(file, 'utf8').trim();
      readAt = Date.now();
    }
    return value;
  };
}
