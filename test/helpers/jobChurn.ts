/**
 * Job churn for the ledger's load tests (test/operator/backlog,
 * retention): the pods of one-pod Jobs (`job-<i>`, as CronJobs, Argo and
 * Spark make them), each created with the counts its agent wrote
 * (counters(i)) and deleted `window` Jobs later, `concurrency` at a time,
 * against the real API server of an OperatorCluster.
 *
 *   new JobChurn({ oc, namespace, node(i), window, concurrency, ratePerS?, growEvery? })
 *     ratePerS  Jobs started a second (default: as fast as the API server takes them)
 *     growEvery every growEvery-th pod's agent writes grown counts before it dies
 *   create(i, node?) → the pod's uid; delete(i, grow = true); alive() → [i, uid][]
 *   run(from, to, { first, finish }): Jobs from..to-1, deleting the pod `window`
 *     Jobs before each (not before `first`); `finish` deletes the rest too
 *   finals (i → the pod's final counts), sum(), requests (pod requests made), deleted (pods deleted)
 */
import { ANNOTATIONS, podAnnotations } from '../../common/contract/annotations.ts';
import { sleep } from './cleanup.ts';
import { add, counters, type Counts, type OperatorCluster } from './operatorCluster.ts';

export interface ChurnOptions {
  oc: OperatorCluster;
  namespace: string;
  /** The node Job i's pod runs on. */
  node: (i: number) => string;
  /** Pods alive at a time: pod i is deleted once pod i + window is created. */
  window: number;
  concurrency: number;
  ratePerS?: number;
  growEvery?: number;
}

export class JobChurn {
  readonly finals = new Map<number, Counts>();
  /** Pod requests made: creates, count writes, deletes. */
  requests = 0;
  /** Pods deleted (their DELETE answered). */
  deleted = 0;
  readonly #created = new Map<number, Promise<string>>();
  readonly #deleting = new Set<number>();
  readonly #o: ChurnOptions;

  constructor(options: ChurnOptions) {
    this.#o = options;
  }

  name(i: number): string {
    return `job-${i}-x7k2p`;
  }

  #podPath(i?: number): string {
    return `/api/v1/namespaces/${this.#o.namespace}/pods${i === undefined ? '' : `/${this.name(i)}`}`;
  }

  /** Creates Job `job-i`'s pod on `node` with its counts written: one request. */
  create(i: number, node = this.#o.node(i)): Promise<string> {
    const counts = counters(i);
    const created = (async () => {
      const pod = await this.#o.oc.api.request<{ metadata: { uid: string } }>('POST', this.#podPath(), {
        body: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name: this.name(i),
            namespace: this.#o.namespace,
            ownerReferences: [
              {
                apiVersion: 'batch/v1',
                kind: 'Job',
                name: `job-${i}`,
                uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
                controller: true,
              },
            ],
            annotations: { ...podAnnotations(counts, undefined), [ANNOTATIONS.updated]: new Date().toISOString() },
          },
          spec: { nodeName: node, containers: [{ name: 'job', image: 'example.invalid/job' }] },
        },
      });
      this.requests++;
      this.finals.set(i, counts);
      return pod.metadata.uid;
    })();
    this.#created.set(i, created);
    return created;
  }

  /** Deletes Job `i`'s pod (once); with `grow`, every growEvery-th pod's agent writes grown counts first. */
  async delete(i: number, grow = true): Promise<void> {
    if (this.#deleting.has(i)) return;
    this.#deleting.add(i);
    const uid = await this.#created.get(i)!;
    if (grow && this.#o.growEvery !== undefined && i % this.#o.growEvery === 0) {
      const grown = add(this.finals.get(i)!, counters(3));
      await this.#o.oc.api.request('PATCH', this.#podPath(i), {
        body: {
          metadata: {
            uid,
            annotations: { ...podAnnotations(grown, undefined), [ANNOTATIONS.updated]: new Date().toISOString() },
          },
        },
        contentType: 'application/merge-patch+json',
      });
      this.finals.set(i, grown);
      this.requests++;
    }
    await this.#o.oc.api.request('DELETE', this.#podPath(i), { query: { gracePeriodSeconds: 0 } });
    this.requests++;
    this.deleted++;
  }

  /** Jobs whose pod lives, with its uid. */
  async alive(): Promise<[number, string][]> {
    const out: [number, string][] = [];
    for (const [i, uid] of this.#created) if (!this.#deleting.has(i)) out.push([i, await uid]);
    return out;
  }

  /**
   * Jobs `from..to-1`: creates each one's pod and deletes the pod `window`
   * Jobs before it (not before `first`); `finish` deletes the last ones too.
   */
  async run(from: number, to: number, options: { first: number; finish: boolean }): Promise<void> {
    const { window, concurrency, ratePerS } = this.#o;
    let next = from;
    const started = Date.now();
    const worker = async () => {
      while (next < to) {
        const i = next++;
        const due = ratePerS === undefined ? 0 : started + ((i - from) * 1000) / ratePerS;
        if (due > Date.now()) await sleep(due - Date.now());
        await this.create(i);
        if (i - window >= options.first) await this.delete(i - window);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    if (!options.finish) return;
    const tail = (await this.alive()).map(([i]) => i).filter((i) => i >= options.first && i < to);
    for (let k = 0; k < tail.length; k += concurrency)
      await Promise.all(tail.slice(k, k + concurrency).map((i) => this.delete(i)));
  }

  sum(): Counts {
    return add(...this.finals.values());
  }
}
