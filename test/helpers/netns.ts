/**
 * Network namespaces for tests: traffic stays on their own loopback.
 *
 *   makeNetns(t?): TestNetns
 *     `ip netns add podmeter-test-<rand>`, then lo up: 127.0.0.1 and ::1 usable.
 *     With `t` (a node:test context) it is deleted after the test; in any case
 *     on SIGINT/SIGTERM.
 *
 *   TestNetns: { name, exec, remove() }
 *     exec     argv prefix that runs a command inside: ['ip', 'netns', 'exec', name]
 *     remove() `ip netns del`; idempotent. Processes still inside keep the
 *              namespace alive until they exit (remove their cgroups first).
 *
 *   vethPair(inner, outer, outerName, { innerMac?, outerMac?, mtu? })
 *     A veth pair joining two of them: eth0 in `inner`, `outerName` in
 *     `outer`, both up, without IPv6 duplicate address detection.
 *   addDnat(netns, family, service, to, match?)
 *     kube-proxy's iptables rule in `netns`'s nat PREROUTING chain: packets
 *     to `service` (`match`: of one protocol to one port) go to `to`.
 */
import { execFileSync } from 'node:child_process';
import { afterOrSignal, randomSuffix, sweepOnce, sweepStale, TEST_PREFIX, type AfterHook } from './cleanup.ts';
import type { Family } from './traffic.ts';

export interface TestNetns {
  name: string;
  /** argv prefix running a command inside the namespace. */
  exec: string[];
  remove(): Promise<void>;
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Deletes test network namespaces whose test process is gone (staleTestName); returns their names. */
export function sweepStaleNetns(): string[] {
  const names = ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '');
  return sweepStale(names, (name) => ip(['netns', 'del', name]));
}

export function makeNetns(t?: AfterHook): TestNetns {
  sweepOnce('netns', sweepStaleNetns);
  const name = `${TEST_PREFIX}${randomSuffix()}`;
  ip(['netns', 'add', name]);
  const remove = afterOrSignal(t, () => {
    try {
      ip(['netns', 'del', name]);
    } catch (err) {
      if (!/No such file|Cannot remove|does not exist/i.test(String((err as { stderr?: string }).stderr))) throw err;
    }
  });
  try {
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
    const addrs = ip(['-n', name, 'addr', 'show', 'dev', 'lo']);
    if (!addrs.includes('127.0.0.1') || !addrs.includes('::1')) {
      throw new Error(`netns ${name}: lo lacks 127.0.0.1 or ::1 (IPv6 disabled?):\n${addrs}`);
    }
  } catch (err) {
    void remove();
    throw err;
  }
  return { name, exec: ['ip', 'netns', 'exec', name], remove };
}

/** Runs `argv` inside `netns`; its stdout. */
export function inNetns(netns: TestNetns, argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', netns.name, ...argv], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A veth pair from `inner` (named eth0 there) to `outer` (named `outerName`), both ends up; MACs and MTU as given. */
export function vethPair(
  inner: TestNetns,
  outer: TestNetns,
  outerName: string,
  options: { innerMac?: string; outerMac?: string; mtu?: number } = {},
): void {
  const temp = `pmv${randomSuffix()
    .replace(/[^a-z0-9]/g, '')
    .slice(-8)}`; // veth names: at most 15 characters
  const mac = (address: string | undefined) => (address === undefined ? [] : ['address', address]);
  ip([
    ...['link', 'add', temp, ...mac(options.innerMac), 'netns', inner.name],
    ...['type', 'veth', 'peer', 'name', outerName, ...mac(options.outerMac), 'netns', outer.name],
  ]);
  ip(['-n', inner.name, 'link', 'set', temp, 'name', 'eth0']);
  const mtu = options.mtu === undefined ? [] : ['mtu', String(options.mtu)];
  for (const [ns, dev] of [
    [inner, 'eth0'],
    [outer, outerName],
  ] as const) {
    inNetns(ns, ['sysctl', '-q', '-w', `net.ipv6.conf.${dev}.accept_dad=0`]);
    ip(['-n', ns.name, 'link', 'set', dev, ...mtu, 'up']);
  }
}

/**
 * kube-proxy's rule for a Service (its iptables mode), in `netns`: packets
 * to `service` (with `match`, only those of that protocol to that port) go
 * to `to` (an address, or address:port; [address]:port for IPv6).
 */
export function addDnat(
  netns: TestNetns,
  family: Family,
  service: string,
  to: string,
  match?: { protocol: 'tcp' | 'udp'; port: number },
): void {
  const only = match === undefined ? [] : ['-p', match.protocol, '--dport', String(match.port)];
  inNetns(netns, [
    family === 4 ? 'iptables' : 'ip6tables',
    ...['-t', 'nat', '-A', 'PREROUTING', '-d', service, ...only],
    ...['-j', 'DNAT', '--to-destination', to],
  ]);
}

/** TCP segments retransmitted in the namespace (/proc/net/snmp is per netns: only the test's connections). */
export function retransSegs(netns: TestNetns): number {
  const snmp = execFileSync('ip', ['netns', 'exec', netns.name, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
  const lines = snmp.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = names.indexOf('RetransSegs');
  return i < 0 ? 0 : Number(values[i]);
}

/** The largest TCP segment on loopback (a GSO super-packet), for bounds with retransmissions. */
export const MAX_TCP_SEGMENT = 65_536;
