/**
 * Cost of asking the node's conntrack table which backend answers each
 * Service flow: Conntrack.backends() of FLOWS tuples in one call, every one
 * with an entry (UDP flows through a real iptables DNAT, test/helpers/serviceNode.ts),
 * and the same number with none (each answered ENOENT).
 *
 *   node bench/conntrack.bench.ts       (FLOWS=1000 REPEAT=50 by default)
 *
 * Makes three podmeter-test- network namespaces (pod, node, backend), sends
 * one datagram from each of FLOWS pod ports to the ClusterIP, then times the
 * lookups from this process (Conntrack opened in the node's namespace);
 * everything is removed at the end (on Ctrl-C too). Prints figures and a
 * final JSON line.
 */
import { performance } from 'node:perf_hooks';
import { availableParallelism, release } from 'node:os';
import { Conntrack, type FlowTuple } from '../agent/kernel/conntrack.ts';
import { parseAddress } from '../agent/peers/cidr.ts';
import { runMain } from '../test/helpers/cleanup.ts';
import { waitFor } from '../test/helpers/poll.ts';
import { makeServiceNode, SERVICE_ADDRESSES as A } from '../test/helpers/serviceNode.ts';
import { median } from './stats.ts';
import { yieldToSignals } from './timing.ts';

const FLOWS = Number(process.env.FLOWS ?? 1000);
const REPEAT = Number(process.env.REPEAT ?? 50);
const FIRST_PORT = 20_000;

function tuples(firstPort: number): FlowTuple[] {
  return Array.from({ length: FLOWS }, (_, i) => ({
    protocol: 17,
    local: parseAddress(A.pod[4]).addr,
    localPort: firstPort + i,
    remote: parseAddress(A.clusterIP[4]).addr,
    remotePort: 80,
  }));
}

await runMain(async () => {
  console.log(`conntrack: ${FLOWS} flows, ${availableParallelism()} CPUs; kernel ${release()}`);
  const sn = makeServiceNode();
  sn.dnat('udp', 4, 80, 8080);
  await sn.startBackend([8080]);
  const before = sn.conntrackCount();
  await sn.udpBurst(4, FIRST_PORT, [80], FLOWS);
  await waitFor(`${FLOWS} conntrack entries`, () => (sn.conntrackCount() >= before + FLOWS ? true : undefined));
  const ct = Conntrack.open({ netns: `/run/netns/${sn.node.name}` });
  try {
    const known = tuples(FIRST_PORT);
    const unknown = tuples(FIRST_PORT + FLOWS);
    const found = ct.backends(known).filter((b) => b?.port === 8080).length;
    if (found !== FLOWS) throw new Error(`backends() found ${found} of ${FLOWS} entries`);
    if (ct.backends(unknown).some((b) => b !== undefined)) throw new Error('an unknown tuple had an entry');
    const timings = { known: [] as number[], unknown: [] as number[] };
    for (let rep = 0; rep < REPEAT; rep++) {
      await yieldToSignals();
      for (const [name, batch] of [
        ['known', known],
        ['unknown', unknown],
      ] as const) {
        const start = performance.now();
        ct.backends(batch);
        timings[name].push(performance.now() - start);
      }
    }
    const result = {
      bench: 'conntrack',
      flows: FLOWS,
      cpus: availableParallelism(),
      kernel: release(),
      backendsMsMedian: median(timings.known),
      backendsUsPerFlow: (median(timings.known) * 1000) / FLOWS,
      unknownMsMedian: median(timings.unknown),
      backendsMsMax: Math.max(...timings.known),
    };
    console.log(
      `backends() of ${FLOWS} flows with entries: ${result.backendsMsMedian.toFixed(2)} ms (median of ${REPEAT}; ${result.backendsUsPerFlow.toFixed(2)} µs per flow; max ${result.backendsMsMax.toFixed(2)} ms)`,
    );
    console.log(
      `backends() of ${FLOWS} tuples without entries: ${result.unknownMsMedian.toFixed(2)} ms (median of ${REPEAT})`,
    );
    console.log(JSON.stringify(result));
  } finally {
    ct.close();
  }
});
