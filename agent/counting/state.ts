/**
 * What the agent keeps on disk (--state-dir) so a restart loses nothing it
 * knew: the last counters read of every live unit (the final values of a
 * cgroup that vanishes while the agent is down) and the finals of terminated
 * units still within retention. Written atomically (temp file + rename).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDir } from '../files.ts';
import type { DirectionCounters } from './meter.ts';
import type { DirectionPeerCounts, PeerCounts } from '../peers/classes.ts';

export interface UnitRecord {
  id: bigint;
  relPath: string;
  kind: 'pod' | 'cgroup';
  uid?: string;
  attachedAt: number;
  terminatedAt?: number;
  /** Network traffic: every peer class but loopback. */
  counters: DirectionCounters;
  /** The same by peer class, loopback included. */
  peers?: DirectionPeerCounts;
  /**
   * What the unit counted before its current links, added to what they read:
   * an older agent's links replaced at upgrade (in class `unclassified`), the
   * counts of links lost while no agent ran, or an earlier cgroup of the same
   * pod (its cgroup made anew, as after a node reboot).
   */
  base?: Counted;
}

/** Counts in both forms: the totals and by peer class. */
export interface Counted {
  counters: DirectionCounters;
  peers: DirectionPeerCounts;
}

interface Persisted {
  version: 1;
  /** The kernel's boot_id when written (absent in files of older agents). */
  boot?: string;
  live: unknown[];
  finals: unknown[];
}

const FILE = 'state.json';

export class StateStore {
  readonly dir: string;
  /** This boot's id: cgroup ids are inode numbers, unique only within one boot. */
  readonly #boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Creates the directory and checks it is writable, so a bad --state-dir fails before anything is attached. */
  ensure(): void {
    ensureDir(this.dir);
    const probe = join(this.dir, `.probe-${process.pid}`);
    writeFileSync(probe, '');
    renameSync(probe, join(this.dir, '.probe'));
  }

  /**
   * What the previous run saved; nothing when there is no state file. A file
   * that cannot be read or parsed (truncated by a full disk, hand-edited) is
   * moved aside to state.json.corrupt and reported in `problem`: the agent
   * starts without it (live cgroups' counts are in their pinned links).
   * `earlierBoot`: the file was written before the node last booted, so its
   * cgroup ids name no cgroup now (the same numbers are given out again).
   */
  load(): { live: UnitRecord[]; finals: UnitRecord[]; earlierBoot: boolean; problem?: Error } {
    const path = join(this.dir, FILE);
    try {
      const data = JSON.parse(readFileSync(path, 'utf8')) as Persisted;
      if (data.version !== 1) throw new Error(`unknown state file version ${JSON.stringify(data.version)}`);
      return { live: data.live.map(decode), finals: data.finals.map(decode), earlierBoot: data.boot !== undefined && data.boot !== this.#boot };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { live: [], finals: [], earlierBoot: false };
      try {
        renameSync(path, `${path}.corrupt`);
      } catch {
        // read-only or gone: the next save replaces it anyway
      }
      return { live: [], finals: [], earlierBoot: false, problem: err as Error };
    }
  }

  save(live: Iterable<UnitRecord>, finals: Iterable<UnitRecord>): void {
    const data: Persisted = { version: 1, boot: this.#boot, live: [...live].map(encode), finals: [...finals].map(encode) };
    const tmp = join(this.dir, `${FILE}.tmp`);
    writeFileSync(tmp, JSON.stringify(data));
    renameSync(tmp, join(this.dir, FILE));
  }
}

type Raw = Record<string, { bytes: string; packets: string }>;

const text = (c: Record<string, { bytes: bigint; packets: bigint }>): Raw =>
  Object.fromEntries(Object.entries(c).map(([k, v]) => [k, { bytes: String(v.bytes), packets: String(v.packets) }]));

const parse = (raw: Raw | undefined): Record<string, { bytes: bigint; packets: bigint }> =>
  Object.fromEntries(Object.entries(raw ?? {}).map(([k, v]) => [k, { bytes: BigInt(v.bytes), packets: BigInt(v.packets) }]));

function encode(r: UnitRecord): unknown {
  const out: Record<string, unknown> = {
    id: String(r.id),
    relPath: r.relPath,
    kind: r.kind,
    uid: r.uid,
    attachedAt: r.attachedAt,
    terminatedAt: r.terminatedAt,
    counters: text(r.counters),
    peers: { ingress: text(r.peers?.ingress ?? {}), egress: text(r.peers?.egress ?? {}) },
  };
  if (r.base !== undefined) out.base = { counters: text(r.base.counters), peers: { ingress: text(r.base.peers.ingress), egress: text(r.base.peers.egress) } };
  return out;
}

function decode(raw: unknown): UnitRecord {
  const r = raw as Record<string, any>;
  const counters = parse(r.counters) as DirectionCounters;
  const record: UnitRecord = {
    id: BigInt(r.id),
    relPath: String(r.relPath),
    kind: r.kind === 'pod' ? 'pod' : 'cgroup',
    attachedAt: Number(r.attachedAt),
    counters,
    // State of an agent before peer classes: its counts are in no known class.
    peers: r.peers === undefined
      ? { ingress: { unclassified: counters.ingress }, egress: { unclassified: counters.egress } }
      : { ingress: parse(r.peers.ingress) as PeerCounts, egress: parse(r.peers.egress) as PeerCounts },
  };
  if (r.base?.counters !== undefined) {
    record.base = { counters: parse(r.base.counters) as DirectionCounters, peers: { ingress: parse(r.base.peers?.ingress) as PeerCounts, egress: parse(r.base.peers?.egress) as PeerCounts } };
  } else if (r.base !== undefined) {
    // An agent before peer-class bases: its base was an upgrade's, in `unclassified`.
    const base = parse(r.base) as DirectionCounters;
    record.base = { counters: base, peers: { ingress: { unclassified: base.ingress }, egress: { unclassified: base.egress } } };
  }
  if (typeof r.uid === 'string') record.uid = r.uid;
  if (typeof r.terminatedAt === 'number') record.terminatedAt = r.terminatedAt;
  return record;
}
