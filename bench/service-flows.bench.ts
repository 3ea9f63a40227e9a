/**
 * What Service flows cost the agent: new UDP flows to a Service address at
 * RATE per second for SECONDS (each datagram from a fresh socket, so each is
 * a new flow and a new conntrack entry), through a DNAT in the "node" netns
 * (test/helpers/topology.ts world; kube-proxy's rule), with a standalone
 * agent resolving them (--conntrack-netns). Prints the agent's CPU (% of a
 * core) while the flows run and while idle just before, its RSS, and
 * whether every byte landed in the backend's class (none in `service`).
 *
 *   node bench/service-flows.bench.ts        (RATE=1000 SECONDS=30)
 *
 * Prints figures and a final JSON line. Needs root and iptables.
 */
import { readFileSync } from 'node:fs';
import { startAgentProcess } from '../test/helpers/agent.ts';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
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
  const pid = agent.child.pid!;
  const cpuSeconds = () => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
  };
  const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
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
  console.log(
    JSON.stringify({
      bench: 'service-flows',
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
