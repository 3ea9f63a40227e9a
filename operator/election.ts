/**
 * Leader election with a coordination.k8s.io/v1 Lease, as client-go does
 * it: the holder renews every 5 s; a lease not renewed for 15 s (by the
 * holder's renewTime, and also not seen to change for 10 s by this process,
 * so a skewed clock alone cannot steal it) is taken over, with the
 * resourceVersion as the lock. The leader stops acting as leader as soon as
 * its last successful renewal is older than the lease minus a margin, before
 * any standby may take over. A stopping leader releases the lease so the
 * standby takes over at once.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../common/log.ts';
import { describe, isStatus, type KubeApi } from '../common/kube/api.ts';
import { sleep } from '../common/sleep.ts';

export interface ElectionOptions {
  api: KubeApi;
  namespace: string;
  name: string;
  identity: string;
  log: Logger;
  leaseMs?: number;
  renewMs?: number;
  retryMs?: number;
  onError?: (err: unknown) => void;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: LeaseSpec;
}

/** Kubernetes MicroTime: RFC 3339 with exactly six fractional digits. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector extends EventEmitter<{ started: []; stopped: [] }> {
  readonly #o: Required<Omit<ElectionOptions, 'onError'>> & Pick<ElectionOptions, 'onError'>;
  readonly #stop = new AbortController();
  #leader = false;
  #lastRenew = 0;
  #observed: { key: string; at: number } | undefined;
  #loop: Promise<void> | undefined;

  constructor(options: ElectionOptions) {
    super();
    this.#o = { leaseMs: 15_000, renewMs: 5_000, retryMs: 1_000, ...options };
  }

  /** True while this process holds a lease it renewed recently enough. */
  get isLeader(): boolean {
    return this.#leader && Date.now() - this.#lastRenew < this.#o.leaseMs - this.#o.renewMs / 2;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops; a leader releases the lease (after `beforeRelease`, e.g. a last write) so a standby takes over at once. */
  async stop(beforeRelease?: () => Promise<void>): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    if (!this.#leader) return;
    await beforeRelease?.().catch(() => {});
    this.#setLeader(false);
    try {
      const lease = await this.#get();
      if (lease?.spec?.holderIdentity === this.#o.identity) {
        lease.spec = {
          ...lease.spec,
          holderIdentity: '',
          leaseDurationSeconds: 1,
          renewTime: microTime(Date.now() - 60_000),
        };
        await this.#o.api.request('PUT', this.#path(), { body: lease, timeoutMs: 5_000 });
        this.#o.log.info('lease released');
      }
    } catch (err) {
      this.#o.log.warn({ err: describe(err) }, 'could not release the lease; the standby takes over when it expires');
    }
  }

  /** A lease round failed and none has worked since (logged once per outage). */
  #failing = false;

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      let wait = this.#o.retryMs;
      try {
        wait = await this.#round();
        if (this.#failing) this.#o.log.info('lease rounds work again');
        this.#failing = false;
      } catch (err) {
        this.#o.onError?.(err);
        // Once per outage, not at every 1 s retry.
        this.#o.log[this.#failing ? 'debug' : 'warn']({ err: describe(err) }, 'lease round failed');
        this.#failing = true;
      }
      if (this.#leader && !this.isLeader) {
        this.#o.log.error(
          { sinceRenewMs: Date.now() - this.#lastRenew },
          'could not renew the lease in time: no longer leading',
        );
        this.#setLeader(false);
      }
      await sleep(wait, this.#stop.signal);
    }
  }

  /** One attempt to acquire or renew; returns how long to wait before the next. */
  async #round(): Promise<number> {
    const now = Date.now();
    const lease = await this.#get();
    const leaseSeconds = Math.round(this.#o.leaseMs / 1000);
    if (lease === undefined) {
      const created: Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.#o.name, namespace: this.#o.namespace },
        spec: {
          holderIdentity: this.#o.identity,
          leaseDurationSeconds: leaseSeconds,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: 0,
        },
      };
      if (await this.#write('POST', created, now)) this.#acquired('created the lease');
      return this.#leader ? this.#o.renewMs : this.#o.retryMs;
    }
    const spec = lease.spec ?? {};
    if (spec.holderIdentity === this.#o.identity) {
      lease.spec = { ...spec, leaseDurationSeconds: leaseSeconds, renewTime: microTime(now) };
      if ((await this.#write('PUT', lease, now)) && !this.#leader) this.#acquired('holds the lease again');
      return this.#leader ? this.#o.renewMs : this.#o.retryMs;
    }
    if (this.#leader) this.#setLeader(false); // someone else holds it now
    const key = `${spec.holderIdentity}/${spec.renewTime}`;
    if (this.#observed?.key !== key) this.#observed = { key, at: now };
    const durationMs = (spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
    const renewedAt = Date.parse(spec.renewTime ?? '') || 0;
    const free = !spec.holderIdentity;
    const expiresAt = Math.max(renewedAt + durationMs, this.#observed.at + durationMs - this.#o.renewMs);
    if (!free && now < expiresAt) return Math.max(50, Math.min(this.#o.retryMs, expiresAt - now + 20));
    lease.spec = {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: leaseSeconds,
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (spec.leaseTransitions ?? 0) + (spec.holderIdentity ? 1 : 0),
    };
    if (await this.#write('PUT', lease, now))
      this.#acquired(free ? 'took the free lease' : `took over from ${spec.holderIdentity}`);
    return this.#leader ? this.#o.renewMs : this.#o.retryMs;
  }

  async #write(method: 'POST' | 'PUT', lease: Lease, now: number): Promise<boolean> {
    try {
      await this.#o.api.request(method, method === 'POST' ? this.#path(false) : this.#path(), {
        body: lease,
        timeoutMs: Math.min(this.#o.renewMs, 5_000),
      });
      this.#lastRenew = now;
      return true;
    } catch (err) {
      if (isStatus(err, 409)) return false; // another candidate was faster
      throw err;
    }
  }

  async #get(): Promise<Lease | undefined> {
    return this.#o.api.find<Lease>(this.#path(), { timeoutMs: 5_000 });
  }

  #acquired(how: string): void {
    this.#o.log.info({ identity: this.#o.identity, lease: `${this.#o.namespace}/${this.#o.name}` }, `leading: ${how}`);
    this.#setLeader(true);
  }

  #setLeader(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    this.emit(leader ? 'started' : 'stopped');
  }

  #path(named = true): string {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.#o.namespace)}/leases`;
    return named ? `${base}/${encodeURIComponent(this.#o.name)}` : base;
  }
}
