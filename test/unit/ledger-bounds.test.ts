/**
 * The ledger's list bounds (operator/ledger/status.ts compact, spillLayout):
 * a NodeUsage keeps its rolled-up retirements newest first up to
 * KEPT_RETIREMENTS_BYTES of JSON, never drops an intent not rolled up, and
 * moves `finalsAfter` past what it dropped while a final could still arrive
 * for it; it lists its newest intents up to LISTED_INTENTS_BYTES, the older
 * ones go into NodeRetirements objects.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  compact,
  FINAL_LATENESS_MS,
  KEPT_RETIREMENTS_BYTES,
  LISTED_INTENTS_BYTES,
  SPILL_BYTES,
  spillLayout,
} from '../../operator/ledger/status.ts';
import type { Retirement } from '../../operator/ledger/entry.ts';
import { toStrings } from '../../common/contract/counts.ts';
import { counters } from '../helpers/operatorCluster.ts';

function retirement(i: number, at: number, rolledUp: boolean): [string, Retirement] {
  const uid = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
  const counts = counters(i, 1_000_000n);
  return [
    uid,
    {
      entry: {
        uid,
        namespace: 'batch',
        workloadKind: 'Job',
        workload: `nightly-${i}`,
        ...toStrings(counts),
        at: new Date(at).toISOString(),
        rolledUp,
      },
      counts,
      at,
      seq: i + 1,
    },
  ];
}

const size = (m: Map<string, Retirement>) =>
  [...m.values()].filter((r) => r.entry.rolledUp).reduce((n, r) => n + JSON.stringify(r.entry).length, 0);

test('15 minutes at 100 retirements a second: the rolled-up ones kept fit the bound, newest first; intents stay', () => {
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const retiring = new Map<string, Retirement>();
  const n = 15 * 60 * 100;
  for (let i = 0; i < n; i++) retiring.set(...retirement(i, t0 + i * 10, i < n - 300)); // the last 3 s not rolled up yet
  const after = compact(retiring, 0);
  assert.ok(size(retiring) <= KEPT_RETIREMENTS_BYTES, `${size(retiring)} bytes kept`);
  assert.ok(size(retiring) > KEPT_RETIREMENTS_BYTES - 1000, 'the bound is used, not more dropped than needed');
  const kept = [...retiring.values()];
  assert.equal(kept.filter((r) => !r.entry.rolledUp).length, 300, 'every intent not rolled up stays');
  const oldestKept = Math.min(...kept.map((r) => r.at));
  const newestDropped = t0 + (n - 300 - kept.filter((r) => r.entry.rolledUp).length - 1) * 10;
  assert.ok(oldestKept > newestDropped, 'newest kept');
  assert.equal(
    after,
    newestDropped + FINAL_LATENESS_MS,
    'a final of a dropped pod read up to 5 min after its retirement is not taken for an unknown pod',
  );
  // The whole list in JSON (what the status carries) stays far below the 512 KiB promised per object.
  assert.ok(JSON.stringify(kept.map((r) => r.entry)).length < 400 * 1024);
});

test('below the bound nothing is dropped and finalsAfter does not move', () => {
  const retiring = new Map<string, Retirement>([retirement(1, 1000, true), retirement(2, 2000, false)]);
  assert.equal(compact(retiring, 5), 5);
  assert.equal(retiring.size, 2);
});

test('a write backlog: intents past LISTED_INTENTS_BYTES go into NodeRetirements objects of at most SPILL_BYTES, oldest first, each once; those in a listed object stay there', () => {
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const retiring = new Map<string, Retirement>();
  for (let i = 0; i < 3000; i++) retiring.set(...retirement(i, t0 + i, false));
  for (let i = 0; i < 50; i++) retiring.get(retirement(i, 0, false)[0])!.entry.rolledUp = true; // (rolled up: listed, compact bounds them)
  const bytes = (uids: Iterable<string>) =>
    [...uids].reduce((n, u) => n + JSON.stringify(retiring.get(u)!.entry).length, 0);
  const first = spillLayout(retiring, new Map());
  const listedIntents = first.listed.filter((r) => !r.entry.rolledUp);
  assert.ok(bytes(listedIntents.map((r) => r.entry.uid)) <= LISTED_INTENTS_BYTES);
  assert.equal(first.listed.length - listedIntents.length, 50, 'the rolled-up ones are listed');
  assert.equal(
    Math.min(...listedIntents.map((r) => r.seq)),
    3000 - listedIntents.length + 1,
    'the newest intents listed',
  );
  const spilled = first.spill.flat();
  assert.equal(spilled.length + listedIntents.length, 2950, 'every intent once');
  assert.equal(new Set(spilled).size, spilled.length);
  for (const chunk of first.spill) assert.ok(bytes(chunk) <= SPILL_BYTES, `${bytes(chunk)} bytes in one object`);
  assert.ok(first.spill.length >= 2);
  const seqs = spilled.map((u) => retiring.get(u)!.seq);
  assert.deepEqual(
    seqs,
    [...seqs].sort((a, b) => a - b),
    'oldest first',
  );

  // Written: the objects are listed while they hold an intent; only new intents go into new objects.
  const spills = new Map(first.spill.map((chunk, k) => [`n.spill-${k}`, new Set(chunk)]));
  for (const [name, uids] of spills) for (const u of uids) retiring.get(u)!.spill = name;
  for (let i = 3000; i < 3100; i++) retiring.set(...retirement(i, t0 + i, false));
  const second = spillLayout(retiring, spills);
  assert.deepEqual([...second.kept].sort(), [...spills.keys()].sort());
  assert.ok(!second.spill.flat().some((u) => retiring.get(u)!.spill !== undefined), 'nothing written twice');
  // Once every intent of an object is rolled up, it is no longer listed.
  for (const u of spills.get('n.spill-0')!) retiring.get(u)!.entry.rolledUp = true;
  assert.ok(!spillLayout(retiring, spills).kept.has('n.spill-0'));
});
