/**
 * Which Kubernetes API the agent or the operator talks to, if any: --kubeconfig, else the
 * in-cluster service account, else none (standalone: counting and metrics
 * only). A kubeconfig that cannot be read or used is an error at start.
 */
import { existsSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** Loaded lazily: the client library costs memory (README, Performance) that standalone agents do not pay. */
export async function loadKubeConfig(kubeconfig: string | undefined): Promise<KubeConfig | undefined> {
  if (kubeconfig === undefined && !existsSync(SERVICE_ACCOUNT_TOKEN)) return undefined;
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (kubeconfig === undefined) {
    kc.loadFromCluster();
    return kc;
  }
  try {
    kc.loadFromFile(kubeconfig);
  } catch (err) {
    throw new Error(`--kubeconfig '${kubeconfig}': cannot be read as a kubeconfig: ${(err as Error).message}`, { cause: err });
  }
  if (kc.getCurrentCluster() === null) {
    throw new Error(`--kubeconfig '${kubeconfig}': no current context with a cluster (set current-context)`);
  }
  return kc;
}
