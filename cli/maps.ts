/**
 * `podmeter maps`: the node's BPF map memory in one command, the four
 * bpftool + jq views of the seed article at once: the total, by map name
 * (largest first), by owner process, by pod; and the largest maps. Standalone
 * (as root) it enumerates the maps itself; with --agent URL it reads a running
 * agent's /api/v1/maps. --json prints the same document /api/v1/maps serves.
 */
import { existsSync } from 'node:fs';
import { ConfigError, defineFlags, formatHelp, parseFlags, wantsHelp } from '../common/flags/parse.ts';
import { pathValue, switchFlag, decimal } from '../common/flags/values.ts';
import { bytes, table } from '../common/format.ts';
import type { MapsView } from '../agent/maps/routes.ts';
import { agentAccess, agentAccessFlags, getFromAgent, type AgentAccess } from './agentClient.ts';

const mapsFlags = defineFlags({
  json: switchFlag('Print the inventory as JSON (the document /api/v1/maps serves)'),
  agent: {
    metavar: 'URL',
    help: "Read a running agent's /api/v1/maps instead of enumerating maps here (which needs root)",
    parse: (raw: string) => new URL(raw).toString().replace(/\/$/, ''),
  },
  ...agentAccessFlags,
  limit: { metavar: 'N', short: 'n', help: 'Rows per table (0: all)', parse: decimal('rows', 0, false), default: 15 },
  'cgroup-root': {
    metavar: 'PATH',
    help: 'cgroup2 directory pod cgroups are found under (standalone)',
    parse: pathValue,
    defaultHelp: 'the cgroup2 mount',
  },
  bpffs: {
    metavar: 'PATH',
    help: "The agent's bpffs directory, where podmeter's own counter map is pinned (standalone; for its estimate)",
    parse: pathValue,
    default: '/sys/fs/bpf/podmeter',
  },
});

export const mapsHelp = formatHelp(mapsFlags, {
  usage:
    'podmeter maps [--json] [--agent URL [--token TOKEN | --token-file PATH] [--ca-file PATH]] [-n N] [--cgroup-root PATH] [--bpffs PATH]',
  summary: 'Kernel memory of the BPF maps on this node: total, by map name, by owner process, by pod.',
  notes: [
    "Sizes are the kernel's memlock from /proc/<pid>/fdinfo (exact from Linux 6.4, computed from the map's shape before);",
    "podmeter's own per-CPU cgroup storage map is estimated, since the kernel leaves its elements out.",
    'The total counts each map once; a map shared by several owners or pods counts in each of them.',
    "Owner 'program': held only by a loaded BPF program; 'pinned': by a bpffs pin (or the kernel).",
    "Standalone it needs root: 'sudo podmeter maps'.",
  ].join('\n'),
});

function fromAgent(agent: string, access: AgentAccess): Promise<MapsView> {
  return getFromAgent<MapsView>(agent, '/api/v1/maps', access, 10_000);
}

async function standalone(opts: { cgroupRoot: string | undefined; bpffs: string }): Promise<MapsView> {
  const { takeInventory } = await import('../agent/maps/inventory.ts');
  const { mapsView } = await import('../agent/maps/routes.ts');
  const { StatsMap } = await import('../agent/kernel/bpf.ts');
  const { PinDir } = await import('../agent/counting/pins.ts');
  // podmeter_stats, when an agent pinned it: its element count feeds the estimate.
  let own: InstanceType<typeof StatsMap> | undefined;
  const pin = new PinDir(opts.bpffs).map('stats');
  try {
    if (existsSync(pin)) own = StatsMap.fromPin(pin);
  } catch {
    own = undefined;
  }
  try {
    const ownMap = own;
    const inv = await takeInventory({
      ...(opts.cgroupRoot === undefined ? {} : { cgroupRoot: opts.cgroupRoot }),
      ...(ownMap === undefined ? {} : { ownStorage: { mapId: ownMap.info().id, entries: () => ownMap.keys().length } }),
    });
    return mapsView(inv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EPERM' || code === 'EACCES') {
      throw new Error(
        "listing BPF maps needs root (CAP_SYS_ADMIN): run 'sudo podmeter maps', or read a running agent with --agent URL",
        { cause: err },
      );
    }
    throw err;
  } finally {
    own?.close();
  }
}

function limited<T>(rows: T[], limit: number): { shown: T[]; more: number } {
  return limit > 0 && rows.length > limit
    ? { shown: rows.slice(0, limit), more: rows.length - limit }
    : { shown: rows, more: 0 };
}

function section(title: string, header: string[], rows: string[][], more: number): string {
  const tail = more > 0 ? `  ... ${more} more (-n 0 for all)\n` : '';
  return `\n${title}\n${rows.length === 0 ? '  none\n' : table(header, rows).replace(/^(?=.)/gm, '  ')}${tail}`;
}

function pidList(pids: number[]): string {
  if (pids.length === 0) return '-';
  return pids.length <= 3 ? pids.join(',') : `${pids.slice(0, 3).join(',')},+${pids.length - 3}`;
}

/** The human-readable report. */
export function renderMaps(view: MapsView, limit: number): string {
  const memlock = view.memlockExact ? 'memlock exact' : 'memlock is from the map shape, not exact (kernel before 6.4)';
  let out = `BPF map memory: ${bytes(view.totalBytes)} in ${view.mapCount} maps (each map once)\n`;
  out += `kernel ${view.kernel}, ${memlock}, ${view.possibleCpus} possible CPUs, ${view.time}\n`;

  const names = limited(view.byName, limit);
  out += section(
    'By map name (largest first):',
    ['NAME', 'TYPE', 'MAPS', 'MEMORY'],
    names.shown.map((n) => [n.name === '' ? '(no name)' : n.name, n.types.join(','), String(n.maps), bytes(n.bytes)]),
    names.more,
  );

  const owners = limited(view.byOwner, limit);
  out += section(
    'By owner process (a shared map counts for each owner):',
    ['OWNER', 'PIDS', 'MAPS', 'MEMORY'],
    owners.shown.map((o) => [o.owner, pidList(o.pids), String(o.maps), bytes(o.bytes)]),
    owners.more,
  );

  const pods = limited(view.byPod, limit);
  out += section(
    'By pod (a map shared by pods counts in each):',
    ['POD', 'UID', 'MAPS', 'MEMORY'],
    pods.shown.map((p) => [p.pod ? `${p.namespace}/${p.pod}` : '-', p.uid, String(p.maps), bytes(p.bytes)]),
    pods.more,
  );

  const maps = limited(view.maps, limit);
  out += section(
    'Largest maps:',
    ['NAME', 'ID', 'TYPE', 'OWNER', 'MEMORY'],
    maps.shown.map((m) => [
      m.name === '' ? '(no name)' : m.name,
      String(m.id),
      m.type,
      m.owner === 'process' ? `${m.owners.join(',')} (${pidList(m.processes.map((p) => p.pid))})` : m.owner,
      `${bytes(m.bytes)}${m.estimated ? ' (estimated)' : ''}`,
    ]),
    maps.more,
  );
  return out;
}

export async function runMaps(argv: string[]): Promise<void> {
  if (wantsHelp(argv)) return void process.stdout.write(mapsHelp);
  const { values, positionals } = parseFlags(mapsFlags, argv, process.env);
  if (positionals.length > 0) {
    throw new ConfigError(`unexpected argument '${positionals[0]}'`);
  }
  const view =
    values.agent !== undefined
      ? await fromAgent(values.agent, agentAccess(values))
      : await standalone({ cgroupRoot: values['cgroup-root'], bpffs: values.bpffs });
  process.stdout.write(values.json ? `${JSON.stringify(view, null, 2)}\n` : renderMaps(view, values.limit));
}
