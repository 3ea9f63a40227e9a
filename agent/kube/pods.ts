/**
 * This node's pods, from a list+watch of the API restricted to
 * spec.nodeName (never the whole cluster). Maps the uid in a pod cgroup's
 * path to the Pod: the pod uid, or for static pods the config hash that the
 * mirror pod carries in `kubernetes.io/config.hash`. client-node's ListWatch
 * relists on 410 Gone and reconnects with backoff; a watchdog restarts it
 * when the watch has been silent too long (a stalled connection).
 */
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../log.ts';

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  /** The Pod's controller (its owner reference with controller: true), if any. */
  owner?: { kind: string; name: string };
}

const CONFIG_HASH = 'kubernetes.io/config.hash';
const WATCHDOG_MS = 5 * 60_000;
/** How long a deleted Pod stays known by its cgroup uid (its final counts are published after it went). */
const DEPARTED_MS = 15 * 60_000;

export class PodDirectory {
  readonly #kc: KubeConfig;
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #byCgroupUid = new Map<string, PodRef>();
  /** Deleted Pods by cgroup uid, oldest first. */
  readonly #departed = new Map<string, { ref: PodRef; at: number }>();
  #informer: ListWatch<V1Pod> | undefined;
  #lastActivity = Date.now();
  #watchdog: NodeJS.Timeout | undefined;
  #synced = false;
  #retryMs = 1000;
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(kc: KubeConfig, nodeName: string, log: Logger) {
    this.#kc = kc;
    this.#nodeName = nodeName;
    this.#log = log;
  }

  /** Starts watching; resolves after the first list (or rejects with why the API refused). */
  async start(): Promise<void> {
    await this.#startInformer();
    this.#watchdog = setInterval(() => {
      if (Date.now() - this.#lastActivity < WATCHDOG_MS) return;
      this.#log.warn({ silentForMs: Date.now() - this.#lastActivity }, 'pod watch silent too long: restarting it');
      void this.#restart();
    }, 30_000).unref();
  }

  /** The Pod for the uid in a pod cgroup path. */
  byCgroupUid(uid: string): PodRef | undefined {
    return this.#byCgroupUid.get(uid);
  }

  /** The Pod for the uid in a pod cgroup path, also if it was deleted in the last 15 minutes. */
  lastKnown(uid: string): PodRef | undefined {
    return this.#byCgroupUid.get(uid) ?? this.#departed.get(uid)?.ref;
  }

  /** Whether the first list has completed (pods known). */
  get synced(): boolean {
    return this.#synced;
  }

  async stop(): Promise<void> {
    clearInterval(this.#watchdog);
    clearTimeout(this.#retryTimer);
    await this.#informer?.stop();
  }

  async #startInformer(): Promise<void> {
    const api = this.#kc.makeApiClient(CoreV1Api);
    const fieldSelector = `spec.nodeName=${this.#nodeName}`;
    const informer = new ListWatch<V1Pod>(
      '/api/v1/pods',
      new Watch(this.#kc),
      () => api.listPodForAllNamespaces({ fieldSelector }),
      false,
      undefined,
      fieldSelector,
    );
    const touch = () => {
      this.#lastActivity = Date.now();
    };
    informer.on('add', (pod) => (touch(), this.#put(pod)));
    informer.on('update', (pod) => (touch(), this.#put(pod)));
    informer.on('delete', (pod) => (touch(), this.#remove(pod)));
    informer.on('connect', () => {
      touch();
      this.#retryMs = 1000;
    });
    // client-node's ListWatch stops for good on any error but 410 Gone: start
    // it again (relist) with backoff, or new pods stay unknown after an outage.
    informer.on('error', (err) => {
      this.#log.warn({ err: describe(err), retryInMs: this.#retryMs }, 'pod watch failed; restarting it');
      clearTimeout(this.#retryTimer);
      this.#retryTimer = setTimeout(() => void this.#restart(), this.#retryMs).unref();
      this.#retryMs = Math.min(this.#retryMs * 2, 30_000);
    });
    this.#informer = informer;
    await informer.start();
    for (const pod of informer.list()) this.#put(pod);
    this.#synced = true;
    touch();
  }

  async #restart(): Promise<void> {
    try {
      await this.#informer?.stop();
      await this.#startInformer();
    } catch (err) {
      this.#log.warn({ err: describe(err) }, 'pod watch restart failed; will retry');
      this.#lastActivity = Date.now() - WATCHDOG_MS + 30_000;
    }
  }

  #put(pod: V1Pod): void {
    const m = pod.metadata;
    if (!m?.uid || !m.name || !m.namespace) return;
    const controller = m.ownerReferences?.find((o) => o.controller === true);
    const ref: PodRef = { namespace: m.namespace, name: m.name, uid: m.uid, ...(controller ? { owner: { kind: controller.kind, name: controller.name } } : {}) };
    this.#byCgroupUid.set(m.uid, ref);
    const hash = m.annotations?.[CONFIG_HASH];
    if (hash) this.#byCgroupUid.set(hash, ref);
  }

  #remove(pod: V1Pod): void {
    const m = pod.metadata;
    if (!m?.uid) return;
    const now = Date.now();
    for (const key of [m.uid, m.annotations?.[CONFIG_HASH]]) {
      const ref = key === undefined ? undefined : this.#byCgroupUid.get(key);
      if (key === undefined || ref === undefined) continue;
      this.#byCgroupUid.delete(key);
      this.#departed.delete(key); // (re-inserted: the map stays oldest first)
      this.#departed.set(key, { ref, at: now });
    }
    for (const [key, d] of this.#departed) {
      if (now - d.at <= DEPARTED_MS) break;
      this.#departed.delete(key);
    }
  }
}

/** A short description of an API error for logs (client-node errors carry the whole response). */
export function describe(err: unknown): string {
  const e = err as { code?: number | string; message?: string; body?: unknown };
  const code = typeof e?.code === 'number' ? `HTTP ${e.code}` : (e?.code ?? '');
  return `${code} ${(e?.message ?? String(err)).split('\n')[0]}`.trim();
}
