/**
 * The traffic metrics, written as text at each scrape (exposition.ts):
 * podmeter_{pod,cgroup}_network_{bytes,packets}_total (network traffic, by
 * direction) and ..._network_peer_{bytes,packets}_total (by direction and
 * peer class, loopback included). All four come from one read of every
 * unit and one label lookup per unit, made before any of them is written
 * (Exposition.beforeScrape); finals of terminated units stay exported for
 * the retention.
 */
import { DIRECTIONS, type Direction } from '../../common/contract/counts.ts';
import { labelText, type Exposition } from '../../common/http/exposition.ts';
import type { DiscoverMode } from '../cgroups/units.ts';
import type { Tracker } from '../counting/tracker.ts';
import type { Unit } from '../counting/unit.ts';
import type { PodNamer } from '../kube/pods.ts';

export function addTrafficMetrics(
  exposition: Exposition,
  options: { tracker: Tracker; mode: DiscoverMode; podNamer?: () => PodNamer | undefined },
): void {
  const { tracker, mode } = options;
  const labels = new UnitLabels(mode);
  // Each unit with its label texts, made once per scrape for all four metrics.
  let scraped: { unit: Unit; texts: UnitTexts }[] = [];
  exposition.beforeScrape(() => {
    tracker.refresh();
    const namer = options.podNamer?.();
    scraped = tracker.units().map((unit) => ({ unit, texts: labels.of(unit, namer) }));
  });
  const scope = mode === 'pods' ? 'pod' : 'cgroup';
  const what = (w: 'bytes' | 'packets') => (w === 'bytes' ? 'Bytes (IP packet length)' : 'Packets');
  for (const w of ['bytes', 'packets'] as const) {
    exposition.add({
      name: `podmeter_${scope}_network_${w}_total`,
      help: `${what(w)} sent (egress) and received (ingress) by the sockets of each ${scope} on network devices (loopback left out), counted by eBPF cgroup_skb programs.`,
      type: 'counter',
      samples: (emit) => {
        for (const { unit, texts } of scraped) for (const d of DIRECTIONS) emit(texts.totals[d], unit.network[d][w]);
      },
    });
  }
  // A class appears once it has a packet (cardinality: a pod talks to a few classes, not all of them).
  for (const w of ['bytes', 'packets'] as const) {
    exposition.add({
      name: `podmeter_${scope}_network_peer_${w}_total`,
      help: `${what(w)} of each ${scope} by direction and peer class (loopback, node, zone, cross-zone, cross-region, service, external, configured classes). The ${scope}_network_${w}_total series are the sum of every class but loopback.`,
      type: 'counter',
      samples: (emit) => {
        for (const { unit, texts } of scraped) {
          for (const d of DIRECTIONS) {
            const peers = unit.byClass[d];
            for (const peer in peers) emit(texts.peer(d, peer), peers[peer]![w]);
          }
        }
      },
    });
  }
}

/**
 * A unit's escaped label texts: by direction, and by direction and class
 * (made once per class, when the unit first has traffic of it). One object
 * per unit, its class texts made on demand: at 500 pods most are idle, with
 * no class to label (a closure, its context and a Map for each were ~0.12 MiB of
 * heap at 500 pods in bench/agent.bench.ts's setup: heap snapshots, bench/HISTORY.md).
 */
class UnitTexts {
  /** The pod's namespace/name they were made with. */
  readonly name: string;
  readonly totals: Readonly<Record<Direction, string>>;
  readonly #labels: Readonly<Record<string, string>>;
  #peers: Map<string, string> | undefined;

  constructor(name: string, labels: Readonly<Record<string, string>>) {
    this.name = name;
    this.#labels = labels;
    this.totals = {
      ingress: labelText({ ...labels, direction: 'ingress' }),
      egress: labelText({ ...labels, direction: 'egress' }),
    };
  }

  peer(direction: Direction, peer: string): string {
    const key = `${direction}/${peer}`;
    this.#peers ??= new Map();
    let text = this.#peers.get(key);
    if (text === undefined) this.#peers.set(key, (text = labelText({ ...this.#labels, direction, peer })));
    return text;
  }
}

/** Each unit's label texts, kept until its pod's name changes. */
class UnitLabels {
  readonly #mode: DiscoverMode;
  readonly #cache = new WeakMap<Unit, UnitTexts>();

  constructor(mode: DiscoverMode) {
    this.#mode = mode;
  }

  of(u: Unit, namer: PodNamer | undefined): UnitTexts {
    const uid = u.uid ?? '';
    const ref = this.#mode === 'pods' ? namer?.(uid) : undefined;
    const name = ref ? `${ref.namespace}/${ref.pod}` : '';
    const cached = this.#cache.get(u);
    if (cached?.name === name) return cached;
    const labels: Record<string, string> =
      this.#mode === 'pods' ? { namespace: ref?.namespace ?? '', pod: ref?.pod ?? '', uid } : { cgroup: u.relPath };
    const texts = new UnitTexts(name, labels);
    this.#cache.set(u, texts);
    return texts;
  }
}
