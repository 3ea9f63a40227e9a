/**
 * The drain of Service flow tables (agent/services/flows.ts) against an
 * in-memory stand-in for the two kernel tables: bytes are moved once, to the
 * resolved class (or `service` with a reason), and an agent that dies at any
 * point of a drain (before its state file is written, after it but before the
 * table is emptied) neither loses nor doubles a byte once restarted from what
 * its state file held. The real tables are in test/agent/service-flows.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NO_TRAFFIC, type Traffic, type UnitCounts } from '../../common/contract/counts.ts';
import { createLogger } from '../../common/log.ts';
import { ServiceFlows, SLICE, type DrainableTables } from '../../agent/services/flows.ts';
import type { Resolution } from '../../agent/services/resolve.ts';
import type { FlowBatch, FlowEntry, KernelMiss, Table } from '../../agent/services/tables.ts';

const log = createLogger({ level: 'error', format: 'json' });

/** Two tables, one active, each with its drain number; `count` is what the programs do. */
class MemoryTables implements DrainableTables {
  readonly tables: [Map<string, FlowEntry>, Map<string, FlowEntry>] = [
    new Map<string, FlowEntry>(),
    new Map<string, FlowEntry>(),
  ];
  readonly epochs: [bigint, bigint] = [0n, 0n];
  current: Table | undefined;

  count(id: string, unit: bigint, bytes: bigint): void {
    if (this.current === undefined) throw new Error('no active table');
    const t = this.tables[this.current];
    const was = t.get(id);
    const egress = {
      bytes: (was?.traffic.egress.bytes ?? 0n) + bytes,
      packets: (was?.traffic.egress.packets ?? 0n) + 1n,
    };
    t.set(id, { ...(was ?? entry(id, unit)), traffic: { ingress: NO_TRAFFIC, egress } });
  }

  active(): Table | undefined {
    return this.current;
  }
  epoch(table: Table): bigint {
    return this.epochs[table];
  }
  activate(table: Table, epoch: bigint): void {
    assert.equal(this.tables[table].size, 0, 'a table is made active only when empty');
    this.epochs[table] = epoch;
    this.current = table;
  }
  async swapTo(table: Table, epoch: bigint): Promise<void> {
    this.activate(table, epoch);
    await Promise.resolve();
  }
  read(table: Table): FlowBatch {
    assert.notEqual(table, this.current, 'only an inactive table is read');
    const entries = [...this.tables[table].values()];
    return { length: entries.length, keys: new Uint8Array(0), entries: (from, to) => entries.slice(from, to) };
  }
  clear(table: Table): void {
    this.tables[table].clear();
  }
  isEmpty(table: Table): boolean {
    return this.tables[table].size === 0;
  }
  misses(): Record<KernelMiss, Traffic> {
    return { 'not-a-flow': NO_TRAFFIC, 'no-unit': NO_TRAFFIC, 'table-full': NO_TRAFFIC };
  }
}

function entry(id: string, unit: bigint): FlowEntry {
  const addr = new Uint8Array(16);
  return {
    id,
    unit,
    protocol: 17,
    local: addr,
    localPort: 1,
    remote: addr,
    remotePort: 2,
    traffic: { ingress: NO_TRAFFIC, egress: NO_TRAFFIC },
  };
}

/** An agent's counts by unit and class (egress bytes), and its state file: what the last successful save held. */
class Agent {
  counts = new Map<string, bigint>();
  file = { counts: new Map<string, bigint>(), drained: 0n };
  failSaves = false;
  dieAfterSave = false;
  readonly flows: ServiceFlows;
  readonly classOf: (id: string) => Resolution;

  constructor(tables: MemoryTables, classOf: (id: string) => Resolution, restoredFrom?: Agent) {
    this.classOf = classOf;
    if (restoredFrom !== undefined) {
      this.file = { counts: new Map(restoredFrom.file.counts), drained: restoredFrom.file.drained };
      this.counts = new Map(this.file.counts);
    }
    this.flows = new ServiceFlows({
      tables,
      resolver: { resolve: (entries) => entries.map((e) => this.classOf(e.id)), settle: () => {} },
      drained: this.file.drained,
      credit: (moves) => {
        for (const [unit, move] of moves) this.#add(unit, move);
        return [];
      },
      persist: () => {
        if (this.failSaves) return Promise.resolve(false);
        this.file = { counts: new Map(this.counts), drained: this.flows.drained() };
        if (this.dieAfterSave) return Promise.reject(new Error('died after the save'));
        return Promise.resolve(true);
      },
      log,
    });
    this.flows.start();
  }

  #add(unit: bigint, move: UnitCounts): void {
    for (const [cls, t] of Object.entries(move.byClass.egress)) {
      const key = `${unit}/${cls}`;
      this.counts.set(key, (this.counts.get(key) ?? 0n) + t.bytes);
    }
  }

  async stop(): Promise<void> {
    await this.flows.stop();
  }
}

const toZone = (): Resolution => ({ cls: 'zone' });

test('a drain moves each flow once, to its class or to service with its reason', async () => {
  const tables = new MemoryTables();
  const agent = new Agent(tables, (id) => (id === 'lost' ? { miss: 'no-conntrack-entry' } : { cls: 'cross-zone' }));
  tables.count('a', 1n, 100n);
  tables.count('a', 1n, 50n);
  tables.count('lost', 1n, 7n);
  tables.count('b', 2n, 30n);
  await agent.flows.drain();
  assert.deepEqual(
    agent.counts,
    new Map([
      ['1/cross-zone', 150n],
      ['1/service', 7n],
      ['2/cross-zone', 30n],
    ]),
  );
  assert.equal(agent.flows.unresolved()['no-conntrack-entry'].bytes, 7n);
  assert.ok(tables.isEmpty(0) && tables.isEmpty(1), 'both tables emptied');
  await agent.flows.drain(); // nothing new: nothing moves
  assert.equal(agent.counts.get('1/cross-zone'), 150n);
  await agent.stop();
});

test('a state file that cannot be written keeps the table full; the bytes move once it can', async () => {
  const tables = new MemoryTables();
  const agent = new Agent(tables, toZone);
  tables.count('a', 1n, 10n);
  agent.failSaves = true;
  await agent.flows.drain();
  assert.equal(agent.counts.get('1/zone'), 10n, 'counted at once');
  tables.count('a', 1n, 5n); // into the other table: the first stays full, so no swap back
  await agent.flows.drain();
  assert.equal(agent.counts.get('1/zone'), 10n);
  agent.failSaves = false;
  await agent.flows.drain();
  assert.equal(agent.counts.get('1/zone'), 15n);
  assert.ok(tables.isEmpty(0) && tables.isEmpty(1));
  await agent.stop();
});

test('an agent that dies before its state file is written: the restarted one moves those bytes again, once', async () => {
  const tables = new MemoryTables();
  const first = new Agent(tables, toZone);
  tables.count('a', 1n, 10n);
  await first.flows.drain();
  tables.count('a', 1n, 20n);
  first.failSaves = true; // the save of this drain never reaches the disk, then the agent dies
  await first.flows.drain();
  await first.stop();
  assert.equal(first.file.counts.get('1/zone'), 10n);
  tables.count('a', 1n, 4n); // while no agent runs
  const second = new Agent(tables, toZone, first);
  await second.flows.drain();
  await second.flows.drain();
  assert.equal(second.counts.get('1/zone'), 34n);
  assert.equal(second.file.counts.get('1/zone'), 34n);
  await second.stop();
});

test('an agent that dies after its state file is written but before the table is emptied: not moved twice', async () => {
  const tables = new MemoryTables();
  const first = new Agent(tables, toZone);
  tables.count('a', 1n, 10n);
  first.dieAfterSave = true;
  await first.flows.drain();
  await first.stop();
  assert.equal(first.file.counts.get('1/zone'), 10n);
  assert.ok(!(tables.isEmpty(0) && tables.isEmpty(1)), 'the drained table was not emptied');
  tables.count('a', 1n, 3n);
  const second = new Agent(tables, toZone, first);
  await second.flows.drain();
  await second.flows.drain();
  assert.equal(second.counts.get('1/zone'), 13n);
  await second.stop();
});

test('drains asked for while one waits to start are one drain', async () => {
  const tables = new MemoryTables();
  const agent = new Agent(tables, toZone);
  let cycles = 0;
  const active = tables.active.bind(tables);
  tables.active = () => {
    cycles++; // each drain asks once which table is active
    return active();
  };
  tables.count('a', 1n, 10n);
  const drains = Array.from({ length: 501 }, () => agent.flows.drain());
  tables.count('a', 1n, 5n); // before the shared drain starts: it counts these too
  await Promise.all(drains);
  assert.equal(agent.counts.get('1/zone'), 15n);
  assert.equal(cycles, 1, `${cycles} drains ran for 501 asked at once`);
  await agent.stop();
});

test('a flood of flows is resolved a slice at a time, the event loop served between slices; every byte once', async () => {
  const tables = new MemoryTables();
  const agent = new Agent(tables, toZone);
  const flows = 10 * SLICE + 3;
  for (let i = 0; i < flows; i++) tables.count(`f${i}`, BigInt(1 + (i % 3)), 10n);
  const seen: number[] = [];
  let turning = true;
  const turn = (): void => {
    seen.push(agent.flows.entriesDrained());
    if (turning) setImmediate(turn);
  };
  setImmediate(turn);
  await agent.flows.drain();
  turning = false;
  const between = seen.filter((n) => n > 0 && n < flows);
  assert.ok(
    between.length >= 5,
    `the event loop ran while the drain was under way (entries drained at each turn: ${seen.join(', ')})`,
  );
  const total = [...agent.counts.values()].reduce((a, b) => a + b, 0n);
  assert.equal(total, BigInt(flows) * 10n);
  assert.equal(agent.counts.get('1/zone'), BigInt(Math.ceil(flows / 3)) * 10n);
  await agent.stop();
});

test('an agent that dies in the middle of resolving a drain: the restarted one moves every byte once', async () => {
  const tables = new MemoryTables();
  let resolved = 0;
  const first = new Agent(tables, () => {
    if (++resolved > 1 + 2 * SLICE) throw new Error('died in the third slice'); // 1: the first drain's flow
    return toZone();
  });
  tables.count('before', 1n, 5n);
  await first.flows.drain();
  for (let i = 0; i < 4 * SLICE; i++) tables.count(`f${i}`, 1n, 10n);
  await first.flows.drain(); // fails in its third slice: nothing credited, nothing saved
  assert.equal(first.counts.get('1/zone'), 5n, 'the slices resolved before the death were not credited');
  await first.stop();
  const second = new Agent(tables, toZone, first);
  await second.flows.drain();
  await second.flows.drain();
  assert.equal(second.counts.get('1/zone'), 5n + BigInt(4 * SLICE) * 10n);
  assert.equal(second.file.counts.get('1/zone'), 5n + BigInt(4 * SLICE) * 10n);
  await second.stop();
});

test('a drain that fails in the middle and is retried counts the unresolved bytes once', async () => {
  const tables = new MemoryTables();
  let resolved = 0;
  const agent = new Agent(tables, () => {
    if (++resolved === 2 * SLICE + 1) throw new Error('conntrack failed in the third slice');
    return { miss: 'no-conntrack-entry' };
  });
  for (let i = 0; i < 4 * SLICE; i++) tables.count(`f${i}`, 1n, 10n);
  await agent.flows.drain(); // fails in its third slice
  await agent.flows.drain(); // the same table again, whole
  assert.equal(agent.flows.unresolved()['no-conntrack-entry'].bytes, BigInt(4 * SLICE) * 10n);
  assert.equal(agent.counts.get('1/service'), BigInt(4 * SLICE) * 10n);
  await agent.stop();
});
