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
 */
import { execFileSync } from 'node:child_process';
import { afterOrSignal, randomSuffix, sweepOnce, sweepStale, TEST_PREFIX, type AfterHook } from './cleanup.ts';

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
