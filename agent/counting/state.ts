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

export interface UnitRecord {
  id: bigint;
  relPath: string;
  kind: 'pod' | 'cgroup';
  uid?: string;
  attachedAt: number;
  terminatedAt?: number;
  counters: DirectionCounters;
}

interface Persisted {
  version: 1;
  live: unknown[];
  finals: unknown[];
}

const FILE = 'state.json';

export class StateStore {
  readonly dir: string;

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

  load(): { live: UnitRecord[]; finals: UnitRecord[] } {
    let text: string;
    try {
      text = readFileSync(join(this.dir, FILE), 'utf8');
    } catch {
      return { live: [], finals: [] };
    }
    const data = JSON.parse(text) as Persisted;
    if (data.version !== 1) return { live: [], finals: [] };
    return { live: data.live.map(decode), finals: data.finals.map(decode) };
  }

  save(live: Iterable<UnitRecord>, finals: Iterable<UnitRecord>): void {
    const data: Persisted = { version: 1, live: [...live].map(encode), finals: [...finals].map(encode) };
    const tmp = join(this.dir, `${FILE}.tmp`);
    writeFileSync(tmp, JSON.stringify(data));
    renameSync(tmp, join(this.dir, FILE));
  }
}

function encode(r: UnitRecord): unknown {
  const c = r.counters;
  return {
    ...r,
    id: String(r.id),
    counters: {
      ingress: { bytes: String(c.ingress.bytes), packets: String(c.ingress.packets) },
      egress: { bytes: String(c.egress.bytes), packets: String(c.egress.packets) },
    },
  };
}

function decode(raw: unknown): UnitRecord {
  const r = raw as Record<string, any>;
  const counters = (d: string) => ({ bytes: BigInt(r.counters[d].bytes), packets: BigInt(r.counters[d].packets) });
  const record: UnitRecord = {
    id: BigInt(r.id),
    relPath: String(r.relPath),
    kind: r.kind === 'pod' ? 'pod' : 'cgroup',
    attachedAt: Number(r.attachedAt),
    counters: { ingress: counters('ingress'), egress: counters('egress') },
  };
  if (typeof r.uid === 'string') record.uid = r.uid;
  if (typeof r.terminatedAt === 'number') record.terminatedAt = r.terminatedAt;
  return record;
}
