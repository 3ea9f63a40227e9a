/**
 * `podmeter top`: a live table of traffic per pod or cgroup, read from a
 * running agent's /api/v1/cgroups, sorted by rate. Rates are the difference
 * of two readings over the time between them. RX and TX are network
 * traffic; loopback (LO: both directions together) is shown apart, as the
 * agent counts it apart, so loopback-only traffic never reads as zeros.
 */
import { defineFlags, formatHelp, parseFlags, wantsHelp } from '../common/flags/parse.ts';
import { oneOf, seconds, switchFlag, decimal } from '../common/flags/values.ts';
import { bytes, rate, table } from '../common/format.ts';
import type { CgroupView } from '../agent/http/api.ts';
import { agentAccess, agentAccessFlags, defaultAgentUrl, getFromAgent, type AgentAccess } from './agentClient.ts';

const topFlags = defineFlags({
  agent: {
    metavar: 'URL',
    help: 'Base URL of a running agent',
    parse: (raw: string) => new URL(raw).toString().replace(/\/$/, ''),
    defaultHelp: 'http://127.0.0.1:9471, https:// when a token is given',
  },
  ...agentAccessFlags,
  interval: { metavar: 'SECONDS', help: 'Refresh period', parse: seconds({ allowZero: false }), default: 1000 },
  sort: { metavar: 'rate|total|name', help: 'Sort order', parse: oneOf(['rate', 'total', 'name']), default: 'rate' },
  limit: {
    metavar: 'N',
    short: 'n',
    help: 'Show at most N rows (0: all)',
    parse: decimal('rows', 0, false),
    default: 0,
  },
  once: switchFlag('Print one table (rates over one interval) and exit'),
});

export const topHelp = formatHelp(topFlags, {
  usage:
    'podmeter top [--agent URL] [--token TOKEN | --token-file PATH] [--ca-file PATH] [--interval SECONDS] [--sort rate|total|name] [-n N] [--once]',
  summary:
    'Live table of network traffic per pod (or cgroup) on one node, from its agent.\nRX and TX: network traffic (every peer class but loopback); LO: loopback, both directions, counted apart.',
  notes:
    "On a plain Linux host: 'sudo podmeter agent' in one terminal, 'podmeter top' in another.\n" +
    "An agent with --metrics-auth kubernetes (the chart's default) wants a token allowed to get /api/v1/cgroups:\n" +
    '  podmeter top --token-file <(kubectl create token -n podmeter podmeter-api-reader)',
});

interface Reading {
  at: number;
  cgroups: CgroupView[];
}

async function read(agent: string, access: AgentAccess): Promise<Reading> {
  let body: { cgroups: CgroupView[] };
  try {
    body = await getFromAgent<{ cgroups: CgroupView[] }>(agent, '/api/v1/cgroups', access, 5000);
  } catch (err) {
    const message = (err as Error).message;
    throw new Error(
      message.startsWith('cannot reach')
        ? `${message}; start one with 'sudo podmeter agent' or pass --agent URL`
        : message,
      { cause: err },
    );
  }
  return { at: performance.now(), cgroups: body.cgroups };
}

export interface TopRow {
  name: string;
  state: string;
  rxRate: number;
  txRate: number;
  rx: bigint;
  tx: bigint;
  /** Loopback bytes, ingress and egress together. */
  loRate: number;
  lo: bigint;
}

function loopback(c: CgroupView): bigint {
  return BigInt(c.peers?.ingress.loopback?.bytes ?? 0) + BigInt(c.peers?.egress.loopback?.bytes ?? 0);
}

/** Rows from two readings; a unit missing from the first has rate over its whole total. */
export function topRows(before: Reading, after: Reading): TopRow[] {
  const seconds = Math.max((after.at - before.at) / 1000, 1e-3);
  const prev = new Map(before.cgroups.map((c) => [c.id, c]));
  return after.cgroups.map((c) => {
    const p = prev.get(c.id);
    const rx = BigInt(c.ingress.bytes);
    const tx = BigInt(c.egress.bytes);
    const lo = loopback(c);
    const name = c.pod ? `${c.namespace}/${c.pod}` : c.kind === 'pod' ? `pod ${c.uid}` : c.cgroup;
    return {
      name,
      state: c.state,
      rxRate: p ? Number(rx - BigInt(p.ingress.bytes)) / seconds : 0,
      txRate: p ? Number(tx - BigInt(p.egress.bytes)) / seconds : 0,
      rx,
      tx,
      loRate: p ? Number(lo - loopback(p)) / seconds : 0,
      lo,
    };
  });
}

export function renderTop(rows: TopRow[], sort: 'rate' | 'total' | 'name', limit: number): string {
  // Network first; loopback breaks ties, so a loopback-only unit still sorts above an idle one.
  const keys = (r: TopRow) => (sort === 'rate' ? [r.rxRate + r.txRate, r.loRate] : [Number(r.rx + r.tx), Number(r.lo)]);
  const byKeys = (a: TopRow, b: TopRow) => {
    const [ka, kb] = [keys(a), keys(b)];
    return kb[0]! - ka[0]! || kb[1]! - ka[1]!;
  };
  const sorted = [...rows].sort((a, b) => (sort === 'name' ? a.name.localeCompare(b.name) : byKeys(a, b)));
  const shown = limit > 0 ? sorted.slice(0, limit) : sorted;
  return table(
    ['NAME', 'RX/s', 'TX/s', 'RX TOTAL', 'TX TOTAL', 'LO/s', 'LO TOTAL', 'STATE'],
    shown.map((r) => [
      r.name,
      rate(r.rxRate),
      rate(r.txRate),
      bytes(r.rx),
      bytes(r.tx),
      rate(r.loRate),
      bytes(r.lo),
      r.state,
    ]),
  );
}

export async function runTop(argv: string[]): Promise<void> {
  const cluster = await import('./topCluster.ts');
  if (cluster.clusterTopTarget(argv) !== undefined) return cluster.runTopCluster(argv);
  if (wantsHelp(argv)) return void process.stdout.write(topHelp);
  const { values } = parseFlags(topFlags, argv, process.env);
  const access = agentAccess(values);
  const agent = values.agent ?? defaultAgentUrl(access);
  const tty = process.stdout.isTTY === true && !values.once;
  let before = await read(agent, access);
  for (;;) {
    await new Promise((r) => setTimeout(r, values.interval));
    const after = await read(agent, access);
    const limit = values.limit || (tty ? Math.max((process.stdout.rows ?? 24) - 3, 5) : 0);
    const body = renderTop(topRows(before, after), values.sort, limit);
    const title = `podmeter top  ${agent}  ${after.cgroups.length} counted  ${new Date().toLocaleTimeString()}\n`;
    process.stdout.write(tty ? `\x1b[H\x1b[2J${title}${body}` : `${title}${body}`);
    if (values.once) return;
    before = after;
  }
}
