/**
 * iperf3 TCP throughput (client and server in test cgroups) with podmeter's
 * programs attached to both cgroups vs nothing attached, in alternating
 * rounds (the order flips every round). NETWORK=veth (default): over a veth
 * pair between two netns, every packet classed by the peer trie (PEERS
 * prefixes); NETWORK=lo: over lo in one netns (the loopback class).
 *
 *   node bench/bpf-throughput.bench.ts      (ROUNDS=7 SECONDS=3 OMIT=1 AFFINITY=0,1 NETWORK=veth PEERS=1000 by default)
 *
 * OMIT seconds at the start of each run are left out (slow start); AFFINITY
 * (iperf3 -A client,server) pins client and server to two CPUs for steadier
 * figures (AFFINITY= leaves placement to the scheduler).
 * Target: median over rounds of the ratio (podmeter / nothing, both runs of the
 * round) >= 0.97 (0.98 before peer classes); pairs cancel slow drift from other load. Prints one line
 * per round, a summary, and a final JSON line.
 */
import { availableParallelism, release } from 'node:os';
import { type Link } from '../agent/kernel/bpf.ts';
import { loadPodmeter } from '../test/helpers/bpf.ts';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
import { runMain } from '../test/helpers/cleanup.ts';
import { runIperfClient, startIperfServer } from '../test/helpers/iperf.ts';
import { benchNetwork } from '../test/helpers/topology.ts';
import { median } from './stats.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const SECONDS = Number(process.env.SECONDS ?? 3);
const OMIT = Number(process.env.OMIT ?? 1);
const AFFINITY = process.env.AFFINITY ?? (availableParallelism() >= 2 ? '0,1' : '');
const NETWORK = process.env.NETWORK ?? 'veth';
const PEERS = Number(process.env.PEERS ?? 1000);
const MIN_RATIO = 0.97;

type Mode = 'podmeter' | 'nothing';

await runMain(async () => {
  const serverCg = makeTestCgroup(undefined, 'iperf-server');
  const clientCg = serverCg.child('iperf-client');
  const pm = loadPodmeter();
  const { clientNetns: netns, serverNetns, address } = benchNetwork(NETWORK, pm, PEERS);
  const server = await startIperfServer(serverCg, serverNetns);
  console.log(
    `bpf-throughput: ${ROUNDS} rounds x ${SECONDS} s (+${OMIT} s omitted) iperf3 TCP over ${NETWORK === 'lo' ? 'lo' : `a veth pair, ${PEERS} prefixes in the peer trie`}; ` +
      `iperf3 -A ${AFFINITY || '(none)'}; ${availableParallelism()} CPUs; kernel ${release()}`,
  );

  const gbps: Record<Mode, number[]> = { podmeter: [], nothing: [] };
  const ratios: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order: Mode[] = round % 2 === 1 ? ['nothing', 'podmeter'] : ['podmeter', 'nothing'];
    const this_: Partial<Record<Mode, number>> = {};
    for (const mode of order) {
      const links: Link[] = [];
      if (mode === 'podmeter') for (const cg of [clientCg, serverCg]) links.push(...Object.values(pm.attach(cg)));
      try {
        const r = await runIperfClient({
          cgroup: clientCg,
          netns,
          address,
          seconds: SECONDS,
          omitSeconds: OMIT,
          affinity: AFFINITY || undefined,
        });
        this_[mode] = r.bitsPerSecond / 1e9;
        gbps[mode].push(r.bitsPerSecond / 1e9);
        console.log(
          `round ${round} ${mode.padEnd(8)}: ${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s (${r.retransmits} retransmits)`,
        );
      } finally {
        for (const l of links) l.close();
      }
    }
    ratios.push(this_.podmeter! / this_.nothing!);
  }
  server.stop();
  // The programs really ran: the counters of the client's cgroup moved.
  const counted = pm.counters(clientCg).egress;

  const result = {
    bench: 'bpf-throughput',
    rounds: ROUNDS,
    secondsPerRound: SECONDS,
    affinity: AFFINITY,
    cpus: availableParallelism(),
    kernel: release(),
    medianGbps: { podmeter: median(gbps.podmeter), nothing: median(gbps.nothing) },
    ratioOfMedians: median(gbps.podmeter) / median(gbps.nothing),
    medianPairedRatio: median(ratios),
    network: NETWORK,
    target: { minRatio: MIN_RATIO },
    clientEgressCounted: { bytes: String(counted?.bytes ?? 0n), packets: String(counted?.packets ?? 0n) },
  };
  console.log(
    `median throughput: podmeter ${result.medianGbps.podmeter.toFixed(2)} Gbit/s, nothing attached ${result.medianGbps.nothing.toFixed(2)} Gbit/s`,
  );
  console.log(
    `median ratio of the per-round pairs: ${result.medianPairedRatio.toFixed(3)} ` +
      `(target >= ${MIN_RATIO}: ${result.medianPairedRatio >= MIN_RATIO ? 'met' : 'NOT met'}); ratio of the medians: ${result.ratioOfMedians.toFixed(3)}`,
  );
  console.log(JSON.stringify(result));
});
