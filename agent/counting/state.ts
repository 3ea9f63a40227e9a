/**
 * What the agent keeps on disk (--state-dir) so a restart loses nothing it
 * knew: the last counters read of every live unit (the final values of a
 * cgroup that vanishes while the agent is down) and the finals of terminated
 * units still within retention. Written atomically and durably: a temp file,
 * fsynced before it is renamed over the state file (else a power cut after
 * the rename can leave an empty or partial state.json: the rename reaches
 * the disk before the data), then the directory fsynced. The writing runs
 * on libuv's threads, never on the event loop: an fsync waits for the disk,
 * which on a node whose disk is busy with other writes can take seconds,
 * and the agent attaches, answers probes and stops meanwhile. One write at
 * a time; saves asked for during it are written once, with the latest text.
 *
 * Read record by record: one that does not decode (hand-edited, an older
 * agent's bug) is dropped and reported, the others are kept.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir } from '../files.ts';
import {
  classTrafficText,
  countOf,
  parseClassTraffic,
  parseTraffic,
  trafficText,
  type UnitCounts,
} from '../../common/contract/counts.ts';

export interface UnitRecord {
  id: bigint;
  relPath: string;
  kind: 'pod' | 'cgroup';
  uid?: string;
  attachedAt: number;
  terminatedAt?: number;
  /** Network traffic: every peer class but loopback. */
  network: UnitCounts['network'];
  /** The same by peer class, loopback included. */
  byClass: UnitCounts['byClass'];
  /**
   * What the unit counted before its current links, added to what they read:
   * the counts of links lost while no agent ran, or an earlier cgroup of the
   * same pod (its cgroup made anew, as after a node reboot).
   */
  base?: UnitCounts;
}

interface Persisted {
  version: 1;
  /** The kernel's boot_id when written (absent in files of older agents). */
  boot?: string;
  live: unknown[];
  finals: unknown[];
  /** The last Service flow drain whose bytes the records hold (agent/services/flows.ts); absent: none. */
  flowsDrained?: string;
}

const FILE = 'state.json';

export class StateStore {
  readonly dir: string;
  /** This boot's id: cgroup ids are inode numbers, unique only within one boot. */
  readonly #boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  /** Each record's JSON as last written, and the fields it was made from (see save()). */
  readonly #written = new WeakMap<UnitRecord, Written>();
  /** The text the next write takes, and the saves waiting for it. */
  #next: { text: string; waiting: { resolve: () => void; reject: (err: Error) => void }[] } | undefined;
  #writing = false;

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
  load(): {
    live: UnitRecord[];
    finals: UnitRecord[];
    earlierBoot: boolean;
    flowsDrained: bigint;
    problem?: Error;
    dropped: DroppedRecord[];
  } {
    const path = join(this.dir, FILE);
    try {
      const data = JSON.parse(readFileSync(path, 'utf8')) as Persisted;
      if (typeof data !== 'object' || data === null) throw new Error('not a JSON object');
      if (data.version !== 1) throw new Error(`unknown state file version ${JSON.stringify(data.version)}`);
      const dropped: DroppedRecord[] = [];
      const records = (list: 'live' | 'finals'): UnitRecord[] => {
        const raw = data[list] ?? [];
        if (!Array.isArray(raw)) throw new Error(`"${list}" is not a list`);
        const out: UnitRecord[] = [];
        raw.forEach((r: unknown, index: number) => {
          try {
            out.push(decode(r));
          } catch (err) {
            dropped.push({ list, index, reason: (err as Error).message });
          }
        });
        return out;
      };
      return {
        live: records('live'),
        finals: records('finals'),
        earlierBoot: data.boot !== undefined && data.boot !== this.#boot,
        // Flow tables are pinned like the links: after a reboot they are new.
        flowsDrained: data.boot === this.#boot ? (countOf(data.flowsDrained) ?? 0n) : 0n,
        dropped,
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return { live: [], finals: [], earlierBoot: false, flowsDrained: 0n, dropped: [] };
      try {
        renameSync(path, `${path}.corrupt`);
      } catch {
        // read-only or gone: the next save replaces it anyway
      }
      return { live: [], finals: [], earlierBoot: false, flowsDrained: 0n, problem: err as Error, dropped: [] };
    }
  }

  /**
   * Writes every record; resolves once what this call saw is on disk (or a
   * later save's text, which includes it), rejects with the write's error.
   * The text is JSON.stringify of a Persisted, made now of each record's
   * JSON, which is kept and used again while the record is unchanged: an
   * idle unit's counts are the same objects from read to read, so a save at
   * 500 pods encodes only the units that counted since the last one (the
   * whole file was encoded at every save, after every attach: a few
   * milliseconds, and the garbage of it, during which no cgroup was attached).
   */
  save(live: Iterable<UnitRecord>, finals: Iterable<UnitRecord>, flowsDrained = 0n): Promise<void> {
    const records = (units: Iterable<UnitRecord>) => Array.from(units, (r) => this.#json(r)).join(',');
    const text = `{"version":1,"boot":${JSON.stringify(this.#boot)},"flowsDrained":"${flowsDrained}","live":[${records(live)}],"finals":[${records(finals)}]}`;
    return new Promise((resolve, reject) => {
      if (this.#next === undefined) this.#next = { text, waiting: [] };
      this.#next.text = text;
      this.#next.waiting.push({ resolve, reject });
      if (!this.#writing) void this.#writeAll();
    });
  }

  /** Writes the latest text until no save waits. */
  async #writeAll(): Promise<void> {
    this.#writing = true;
    while (this.#next !== undefined) {
      const { text, waiting } = this.#next;
      this.#next = undefined;
      try {
        await this.#write(text);
        for (const w of waiting) w.resolve();
      } catch (err) {
        for (const w of waiting) w.reject(err as Error);
      }
    }
    this.#writing = false;
  }

  async #write(text: string): Promise<void> {
    const tmp = join(this.dir, `${FILE}.tmp`);
    const file = await open(tmp, 'w', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, join(this.dir, FILE));
    await syncDir(this.dir);
  }

  /** A record's JSON: as last written while every field encode() reads is the same (counts by identity). */
  #json(r: UnitRecord): string {
    const last = this.#written.get(r);
    if (
      last !== undefined &&
      last.id === r.id &&
      last.relPath === r.relPath &&
      last.kind === r.kind &&
      last.uid === r.uid &&
      last.attachedAt === r.attachedAt &&
      last.terminatedAt === r.terminatedAt &&
      last.network === r.network &&
      last.byClass === r.byClass &&
      last.base === r.base
    ) {
      return last.json;
    }
    const json = JSON.stringify(encode(r));
    const { id, relPath, kind, uid, attachedAt, terminatedAt, network, byClass, base } = r;
    this.#written.set(r, { json, id, relPath, kind, uid, attachedAt, terminatedAt, network, byClass, base });
    return json;
  }
}

/** A record's JSON as written, and the fields of the record it was made of. */
interface Written {
  json: string;
  id: bigint;
  relPath: string;
  kind: UnitRecord['kind'];
  uid: string | undefined;
  attachedAt: number;
  terminatedAt: number | undefined;
  network: UnitCounts['network'];
  byClass: UnitCounts['byClass'];
  base: UnitCounts | undefined;
}

/** A record of the state file that did not decode: left out, the others kept. */
export interface DroppedRecord {
  list: 'live' | 'finals';
  index: number;
  reason: string;
}

/** Makes a rename in `dir` durable; best effort (some filesystems refuse fsync on a directory). */
async function syncDir(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EINVAL/EISDIR on filesystems without directory fsync: the data itself is synced
  } finally {
    await handle?.close();
  }
}

/**
 * A record's counts (or its base) as the file holds them: `network` under
 * the name `counters`, `byClass` under `peers` (the file's names, kept as
 * they are: this pair and decodeCounts are the one place that maps them).
 */
function encodeCounts(c: UnitCounts): unknown {
  return {
    counters: { ingress: trafficText(c.network.ingress), egress: trafficText(c.network.egress) },
    peers: { ingress: classTrafficText(c.byClass.ingress), egress: classTrafficText(c.byClass.egress) },
  };
}

function decodeCounts(raw: Record<string, unknown>, what: string): UnitCounts {
  const field = (name: string) => (what === '' ? name : `${what}.${name}`);
  const both = (value: unknown, name: string): Record<string, unknown> => {
    if (typeof value !== 'object' || value === null) throw new Error(`${field(name)}: not an object`);
    return value as Record<string, unknown>;
  };
  const network = both(raw.counters, 'counters');
  if (network.ingress === undefined || network.egress === undefined)
    throw new Error(`${field('counters')}: needs ingress and egress`);
  const byClass = both(raw.peers, 'peers');
  return {
    network: {
      ingress: parseTraffic(network.ingress, field('counters.ingress')),
      egress: parseTraffic(network.egress, field('counters.egress')),
    },
    byClass: {
      ingress: parseClassTraffic(byClass.ingress, field('peers.ingress')),
      egress: parseClassTraffic(byClass.egress, field('peers.egress')),
    },
  };
}

function encode(r: UnitRecord): unknown {
  return {
    id: String(r.id),
    relPath: r.relPath,
    kind: r.kind,
    uid: r.uid,
    attachedAt: r.attachedAt,
    terminatedAt: r.terminatedAt,
    ...(encodeCounts(r) as object),
    ...(r.base === undefined ? {} : { base: encodeCounts(r.base) }),
  };
}

/** One record of the file; throws an Error saying what is wrong with it. */
function decode(raw: unknown): UnitRecord {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not an object');
  const r = raw as Record<string, unknown>;
  // Negative ids are never written (restore() gives earlier boots' records negative ids in memory only).
  const id = countOf(r.id);
  if (id === undefined) throw new Error(`id: ${JSON.stringify(r.id)} is not a u64 decimal string`);
  if (typeof r.relPath !== 'string' || r.relPath === '') throw new Error('relPath: not a non-empty string');
  if (typeof r.attachedAt !== 'number' || !Number.isFinite(r.attachedAt)) throw new Error('attachedAt: not a number');
  const record: UnitRecord = {
    id,
    relPath: r.relPath,
    kind: r.kind === 'pod' ? 'pod' : 'cgroup',
    attachedAt: r.attachedAt,
    ...decodeCounts(r, ''),
  };
  if (r.base !== undefined) {
    if (typeof r.base !== 'object' || r.base === null) throw new Error('base: not an object');
    record.base = decodeCounts(r.base as Record<string, unknown>, 'base');
  }
  if (typeof r.uid === 'string') record.uid = r.uid;
  if (typeof r.terminatedAt === 'number' && Number.isFinite(r.terminatedAt)) record.terminatedAt = r.terminatedAt;
  return record;
}
