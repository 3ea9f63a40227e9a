/**
 * Every Node, as the two annotations its agent writes (common/contract):
 * `podmeter.io/bpf-map-bytes` and `podmeter.io/finals`, handed to the
 * ledger. Fed by a metadata-only Node watch, beside the pod store
 * (pods.ts). A finals value that did not change is not parsed again;
 * entries past the agents' cap (MAX_FINALS) are ignored and counted.
 */
import type { Logger } from '../common/log.ts';
import type { KubeObject } from '../common/kube/api.ts';
import { ANNOTATIONS, nodeMapBytes } from '../common/contract/annotations.ts';
import { MAX_FINALS, parseNodeFinals, type PodFinal } from '../common/contract/finals.ts';
import type { OperatorErrorOp } from './errors.ts';

/** What the Node annotations feed (the ledger). */
export interface NodeListener {
  nodeExists(node: string, exists: boolean): void;
  nodeMapBytes(node: string, bytes: bigint | undefined): void;
  nodeFinals(node: string, finals: PodFinal[]): void;
}

export class NodeStore {
  readonly #listener: NodeListener;
  readonly #log: Logger;
  readonly #onError: (op: OperatorErrorOp) => void;
  readonly #names = new Set<string>();
  /** Each Node's last `podmeter.io/finals` text. */
  readonly #lastFinals = new Map<string, string>();

  constructor(options: { listener: NodeListener; log: Logger; onError: (op: OperatorErrorOp) => void }) {
    this.#listener = options.listener;
    this.#log = options.log;
    this.#onError = options.onError;
  }

  get size(): number {
    return this.#names.size;
  }

  /** A complete list: Nodes missing from it were deleted while the watch was away. */
  sync(items: KubeObject[]): void {
    const listed = new Set(items.map((o) => o.metadata?.name));
    for (const name of [...this.#names]) if (!listed.has(name)) this.#remove(name);
    for (const o of items) this.#put(o);
  }

  event(type: 'ADDED' | 'MODIFIED' | 'DELETED', o: KubeObject): void {
    if (type !== 'DELETED') return this.#put(o);
    const name = o.metadata?.name;
    if (name) this.#remove(name);
  }

  #put(o: KubeObject): void {
    const name = o.metadata?.name;
    if (!name) return;
    const annotations = o.metadata?.annotations;
    this.#names.add(name);
    this.#listener.nodeExists(name, true);
    this.#listener.nodeMapBytes(name, nodeMapBytes(annotations));
    const text = annotations?.[ANNOTATIONS.finals];
    if (text === undefined || text === this.#lastFinals.get(name)) return;
    this.#lastFinals.set(name, text);
    const { finals, problems, excess } = parseNodeFinals(text);
    if (problems > 0) {
      this.#onError('annotation');
      this.#log.warn(
        { node: name, annotation: ANNOTATIONS.finals, problems },
        'Node annotation has entries that do not parse: they are ignored',
      );
    }
    if (excess > 0) {
      this.#onError('finals');
      this.#log.warn(
        { node: name, annotation: ANNOTATIONS.finals, excess, max: MAX_FINALS },
        'Node annotation has more finals than an agent writes: the ones past the cap are ignored',
      );
    }
    this.#listener.nodeFinals(name, finals);
  }

  #remove(name: string): void {
    this.#names.delete(name);
    this.#lastFinals.delete(name);
    this.#listener.nodeMapBytes(name, undefined);
    this.#listener.nodeExists(name, false);
  }
}
