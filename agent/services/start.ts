/**
 * The Service flows of a running agent: the node's conntrack table opened,
 * the drains started (flows.ts), and their metric.
 */
import type { Logger } from '../../common/log.ts';
import type { Exposition } from '../../common/http/exposition.ts';
import { labelText } from '../../common/http/exposition.ts';
import type { Meter } from '../counting/meter.ts';
import type { Tracker } from '../counting/tracker.ts';
import { Conntrack } from '../kernel/conntrack.ts';
import { PeerTrie } from '../peers/trie.ts';
import { ServiceFlows } from './flows.ts';
import { FlowResolver } from './resolve.ts';

export interface RunningServiceFlows {
  flows: ServiceFlows;
  stop(): Promise<void>;
}

/**
 * The conntrack table Service flows are resolved with. `netns`
 * (--conntrack-netns) that cannot be opened stops the start (a bad flag);
 * the agent's own table that cannot be read (no CAP_NET_ADMIN) is logged,
 * and Service traffic then stays in `service` (reason conntrack-unavailable).
 */
export function openConntrack(netns: string | undefined, log: Logger): Conntrack | undefined {
  try {
    return Conntrack.open(netns === undefined ? {} : { netns });
  } catch (err) {
    if (netns !== undefined) throw new Error(`--conntrack-netns '${netns}': ${(err as Error).message}`, { cause: err });
    log.warn(
      { err },
      "cannot read the node's conntrack table: traffic to Services is counted in `service`, not in its backends' classes",
    );
    return undefined;
  }
}

/** Drains the flow tables into the tracker's units from now on (before any cgroup is attached). */
export function startServiceFlows(options: {
  meter: Meter;
  tracker: Tracker;
  drained: bigint;
  conntrack: Conntrack | undefined;
  exposition: Exposition;
  log: Logger;
}): RunningServiceFlows {
  const { meter, tracker, conntrack, log } = options;
  let reported = false;
  const resolver = new FlowResolver({
    conntrack,
    trie: new PeerTrie(meter.maps.peers, meter.maps.gen),
    slots: meter.slots,
    onError: (err) => {
      if (!reported) log.error({ err }, 'conntrack lookup failed: Service flows of this drain stay in `service`');
      reported = true;
    },
  });
  const flows = new ServiceFlows({
    tables: meter.flows,
    resolver,
    drained: options.drained,
    credit: (moves) => tracker.credit(moves),
    persist: () => tracker.save(),
    log,
  });
  tracker.useFlows(flows);
  flows.start();
  options.exposition.add({
    name: 'podmeter_service_unresolved_bytes_total',
    help: "Bytes to and from Service addresses counted in the `service` class, not in the class of their backend, by reason: not-a-flow (no TCP, UDP or SCTP header), no-unit, table-full (the programs' flow table), no-conntrack-entry, backend-is-a-service, conntrack-unavailable, unit-gone.",
    type: 'counter',
    samples(emit) {
      for (const [reason, traffic] of Object.entries(flows.unresolved())) emit(labelText({ reason }), traffic.bytes);
    },
  });
  options.exposition.add({
    name: 'podmeter_service_flow_entries_total',
    help: 'Flow table entries the agent drained: one per Service flow and drain (about a second) it sent or received in. 0 where connect() already has the backend (a socket load balancer).',
    type: 'counter',
    samples(emit) {
      emit('', flows.entriesDrained());
    },
  });
  return {
    flows,
    async stop() {
      await flows.stop();
      conntrack?.close();
    },
  };
}
