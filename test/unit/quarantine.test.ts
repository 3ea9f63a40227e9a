/** Quarantine (operator/ledger/quarantine.ts): a pod whose data its NodeUsage cannot hold is left out of the writes, not the node. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { toStrings, zero, type Counts } from '../../common/contract/counts.ts';
import type { UsageStatus } from '../../common/contract/usage.ts';
import { Quarantine } from '../../operator/ledger/quarantine.ts';
import type { PodRecord } from '../../operator/pods.ts';

const w = { namespace: 'ns', kind: 'Deployment', name: 'web', key: 'ns/Deployment/web' };
const pod = (uid: string, annotated: Counts, checkpointed?: Counts): PodRecord => ({
  uid,
  namespace: 'ns',
  name: uid,
  node: 'n',
  owner: null,
  workload: w,
  firstSeen: 0,
  annotated,
  unread: undefined,
  base: undefined,
  checkpointed,
});
const counts = (n: bigint): Counts => ({ ...zero(), ingressBytes: n, egressBytes: n });

test('a count past the status fields is held back before the write; the pod keeps the checkpoint its totals include', () => {
  const errors: string[] = [];
  const q = new Quarantine(pino({ level: 'silent' }), (op) => errors.push(op));
  const good = pod('good', counts(5n));
  assert.deepEqual(q.checkpoint(good, 'n', w, counts(5n)), {
    entry: { uid: 'good', namespace: 'ns', workloadKind: 'Deployment', workload: 'web', ...toStrings(counts(5n)) },
    counts: counts(5n),
    fresh: true,
  });
  const huge = counts(10n ** 30n);
  const bad = pod('bad', huge, counts(7n));
  const held = q.checkpoint(bad, 'n', w, huge);
  assert.deepEqual([held?.counts, held?.fresh], [counts(7n), false]);
  assert.deepEqual([q.size, errors], [1, ['quarantine']]);
  q.checkpoint(bad, 'n', w, huge);
  assert.deepEqual(errors, ['quarantine'], 'counted once while its counts stay');
  assert.equal(q.checkpoint(pod('never', huge), 'n', w, huge), undefined, 'never checkpointed: no entry');
  // New counts that fit: out of quarantine.
  assert.equal(q.checkpoint(bad, 'n', w, counts(9n))?.fresh, true);
  // Gone from the node: forgotten.
  q.prune('n', [good, bad], new Map());
  assert.equal(q.size, 0);
});

test('a 422 naming an entry quarantines that pod (or retirement) only', () => {
  const q = new Quarantine(pino({ level: 'silent' }), () => {});
  const a = pod('a', counts(1n));
  const b = pod('b', counts(2n));
  const status = { checkpoint: [{ uid: 'a' }, { uid: 'b' }], retiring: [{ uid: 'r' }] } as unknown as UsageStatus;
  assert.equal(q.reject('n', status, ['status.ingressBytes'], [a, b]), false, 'a total names no pod');
  assert.equal(
    q.reject('n', status, ['status.checkpoint[1].workload', 'status.retiring[0].egressBytes'], [a, b]),
    true,
  );
  assert.deepEqual([q.holds('a'), q.holds('b'), q.holds('r')], [false, true, true]);
  assert.equal(q.checkpoint(b, 'n', w, counts(2n)), undefined, 'held with the counts it was refused with');
  assert.equal(q.checkpoint(b, 'n', w, counts(3n))?.fresh, true, 'tried again when they change');
});
