/**
 * What Service flows cost the agent: new UDP flows to a Service address at
 * RATE per second for SECONDS (each datagram from a fresh socket, so each is
 * a new flow and a new conntrack entry), through a DNAT in the "node" netns
 * (test/helpers/topology.ts world; kube-proxy's rule), with a standalone
 * agent resolving them (--conntrack-netns). Prints the agent's CPU (% of a
 * core) while the flows run and while idle just before, its RSS, and
 * whether every byte landed in the backend's class (none in `service`).
 * Then a tenant's worst drain: the agent stopped, its active flow table
 * filled with 65,536 flows no conntrack entry knows (test/helpers/
 * flowFlood.ts), the agent started again; while it drains them /healthz
 * is asked in a loop: how long the drain took (between the first scrape
 * that saw it under way and the one that saw it done), the agent's CPU
 * seconds for it, and the slowest /healthz answer meanwhile.
 *
 *   node bench/service-flows.bench.ts        (RATE=1000 SECONDS=30)
 *
 * Prints figures and a final JSON line. Needs root and iptables.
 */
import { readFileSync } from 'node:fs';
import { PODMETER_MAX_FLOWS } from '../agent/kernel/contract.generated.ts';
import { startAgentProcess } from '../test/helpers/agent.ts';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
import { writeFlowFlood } from '../test/helpers/flowFlood.ts';
import { runMain, sleep } from '../test/helpers/cleanup.ts';
import { waitFor } from '../test/helpers/poll.ts';
import { sample } from '../test/helpers/samples.ts';
import { ADDRESSES, CIDRS, dnatService, makeTopology } from '../test/helpers/topology.ts';
import { spawnInCgroup, udpDatagramBytes } from '../test/helpers/traffic.ts';

const RATE = Number(process.env.RATE ?? 1000);
const SECONDS = Number(process.env.SECONDS ?? 30);
const PORT = 5353;
const PAYLOAD = 64;
const CLASS = 'backend';

/** Sends RATE datagrams a second, each from a new socket, for SECONDS; prints how many. */
const SENDER = `
const dgram = require('node:dgram');
const [address, port, rate, seconds] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const payload = Buffer.alloc(${PAYLOAD});
let sent = 0;
const started = Date.now();
const tick = setInterval(() => {
  const due = Math.min(rate * seconds, Math.floor(((Date.now() - started) / 1000) * rate));
  while (sent < due) {
    const s = dgram.createSocket('udp4');
    s.send(payload, port, address, () => s.close());
    sent++;
  }
  if (sent >= rate * seconds) { clearInterval(tick); setTimeout(() => console.log(JSON.stringify({ sent })), 500); }
}, 10);
`;
const RECEIVER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', () => {});
s.bind(Number(process.argv[2]), process.argv[1]);
`;

await runMain(async () => {
  const root = makeTestCgroup(undefined);
  const app = root.child('client.service');
  const server = root.child('server.service');
  const topo = makeTopology();
  dnatService(topo, 'zone', [4]);
  const agent = await startAgentProcess(undefined, {
    cgroupRoot: root.path,
    args: [
      '--service-cidr',
      CIDRS.service[0],
      '--peer-class',
      `${CLASS}=${CIDRS.zone[0]}`,
      '--conntrack-netns',
      `/run/netns/${topo.world.name}`,
    ],
  });
  await waitFor('2 cgroups attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  const receiver = spawnInCgroup(server, [process.execPath, '-e', RECEIVER, ADDRESSES.zone[4], String(PORT)], {
    netns: topo.world,
  });
  const cpuSeconds = () => {
    const f = readFileSync(`/proc/${agent.child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
  };
  const rssMiB = () =>
    Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
  const cpuOver = async (run: () => Promise<void>) => {
    const c0 = cpuSeconds();
    const t0 = performance.now();
    await run();
    return ((cpuSeconds() - c0) / ((performance.now() - t0) / 1000)) * 100;
  };

  const idle = await cpuOver(() => sleep(SECONDS * 1000));
  let sent = 0;
  const busy = await cpuOver(async () => {
    const sender = spawnInCgroup(
      app,
      [process.execPath, '-e', SENDER, ADDRESSES.service[4], String(PORT), String(RATE), String(SECONDS)],
      { netns: topo.pod },
    );
    let out = '';
    sender.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => sender.once('exit', resolve));
    sent = (JSON.parse(out) as { sent: number }).sent;
    await sleep(2000); // the last drain
  });
  const rss = rssMiB();
  receiver.kill();
  const expected = sent * udpDatagramBytes(4, PAYLOAD);
  const metrics = await agent.metrics();
  const peer = (cls: string) =>
    sample(metrics, 'podmeter_cgroup_network_peer_bytes_total', {
      cgroup: 'client.service',
      direction: 'egress',
      peer: cls,
    }) ?? 0;
  const resolved = peer(CLASS);
  const unresolved = peer('service');
  console.log(
    `service-flows: ${sent} UDP flows at ${RATE}/s for ${SECONDS} s through a DNAT: agent CPU ${busy.toFixed(2)}% of a core ` +
      `(idle before: ${idle.toFixed(2)}%; +${(busy - idle).toFixed(2)} points), RSS ${rss.toFixed(1)} MiB; ` +
      `${resolved} of ${expected} bytes in '${CLASS}', ${unresolved} in service`,
  );

  // The flood: a full table of flows unknown to conntrack, drained by a fresh agent while /healthz is asked.
  const FLOOD = PODMETER_MAX_FLOWS;
  await agent.kill('SIGTERM');
  writeFlowFlood(agent.bpffs, app.path, FLOOD);
  await agent.restart();
  const cpu0 = cpuSeconds();
  const healthz: number[] = [];
  let seenUnderWay: number | undefined;
  let done: number | undefined;
  for (const deadline = Date.now() + 300_000; done === undefined && Date.now() < deadline;) {
    const t0 = performance.now();
    const res = await fetch(`${agent.url}/healthz`);
    await res.text();
    healthz.push(performance.now() - t0);
    const entries = sample(await agent.metrics(), 'podmeter_service_flow_entries_total', {}) ?? 0;
    if (entries > 0) seenUnderWay ??= performance.now();
    if (entries >= FLOOD) done = performance.now();
  }
  const floodCpu = cpuSeconds() - cpu0;
  const drainMs = done !== undefined && seenUnderWay !== undefined ? done - seenUnderWay : NaN;
  healthz.sort((a, b) => a - b);
  const slowest = healthz.at(-1) ?? NaN;
  const median = healthz[Math.floor(healthz.length / 2)] ?? NaN;
  console.log(
    `service-flows flood: ${FLOOD} flows unknown to conntrack drained in ~${drainMs.toFixed(0)} ms (scrape to scrape), ` +
      `agent CPU ${floodCpu.toFixed(2)} s from its ready line; /healthz answered ${healthz.length} times, ` +
      `median ${median.toFixed(1)} ms, slowest ${slowest.toFixed(1)} ms`,
  );
  console.log(
    JSON.stringify({
      bench: 'service-flows',
      floodFlows: FLOOD,
      floodDrainMs: drainMs,
      floodCpuSeconds: floodCpu,
      floodHealthzAnswers: healthz.length,
      floodHealthzMedianMs: median,
      floodHealthzSlowestMs: slowest,
      rate: RATE,
      seconds: SECONDS,
      flows: sent,
      cpuPercent: busy,
      idleCpuPercent: idle,
      rssMiB: rss,
      expectedBytes: expected,
      resolvedBytes: resolved,
      serviceBytes: unresolved,
    }),
  );
  await agent.stop();
});
