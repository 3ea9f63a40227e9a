/**
 * What the agent fault tests share: a sender and a receiver cgroup counted
 * by a real agent, UDP exchanges of known size between them over a veth
 * (never loopback), and the exact totals /metrics must show.
 *
 *   countedPair(t, agentOptions): { agent, exchange(count) }
 *   exactTotals(agent, count)   both directions' bytes and packets equal `count` datagrams
 *   healthy(agent)              /healthz answers 200
 *   logged(agent, msg)          how many log lines have this msg (string or RegExp)
 */
import assert from 'node:assert/strict';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess, type AgentOptions, type AgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import type { AfterHook } from '../helpers/cleanup.ts';
import { queryCgroup } from '../../agent/kernel/bpf.ts';

export const PAYLOAD = 200;
export const DATAGRAM_BYTES = udpDatagramBytes(4, PAYLOAD);

const attached = (path: string) => queryCgroup(path, 'egress').length > 0 && queryCgroup(path, 'ingress').length > 0;

export async function countedPair(t: AfterHook, options: Omit<AgentOptions, 'cgroupRoot'>) {
  const root = makeTestCgroup(t);
  const a = root.child('sender');
  const b = root.child('receiver');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, ...options });
  await waitFor('attached', () => (attached(a.path) && attached(b.path) ? true : undefined));
  const topo = makeTopology(t);
  const exchange = (count: number) =>
    udpExchange({
      senderCgroup: a.path,
      receiverCgroup: b.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count,
      payload: PAYLOAD,
    });
  return { agent, exchange, sender: a, receiver: b };
}

export async function exactTotals(agent: AgentProcess, count: number): Promise<void> {
  const metrics = await waitFor(`metrics at ${count} datagrams`, async () => {
    const text = await agent.metrics();
    return sample(text, 'podmeter_cgroup_network_packets_total', { cgroup: 'receiver', direction: 'ingress' }) === count
      ? text
      : undefined;
  }).catch(async (err: Error) => {
    const text = await agent.metrics();
    throw new Error(
      `${err.message}; receiver ingress packets: ${sample(text, 'podmeter_cgroup_network_packets_total', { cgroup: 'receiver', direction: 'ingress' })}`,
    );
  });
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'sender', direction: 'egress' }),
    count * DATAGRAM_BYTES,
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_packets_total', { cgroup: 'sender', direction: 'egress' }),
    count,
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'receiver', direction: 'ingress' }),
    count * DATAGRAM_BYTES,
  );
}

export async function healthy(agent: AgentProcess): Promise<void> {
  assert.equal((await fetch(`${agent.url}/healthz`)).status, 200);
}

export function logged(agent: AgentProcess, msg: string | RegExp): number {
  return agent.logs.filter((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg)))).length;
}
