/** The usage custom resources' contract (common/contract/usage.ts): object names and reading a hand-edited status. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseLedger, workloadUsageName } from '../../common/contract/usage.ts';

test('WorkloadUsage names: readable, valid, bounded', () => {
  const w = (namespace: string, kind: string, name: string) => ({ namespace, kind, name, key: '' });
  assert.equal(workloadUsageName(w('shop', 'Deployment', 'web')), 'shop.deployment.web');
  const long = workloadUsageName(w('shop', 'Deployment', 'x'.repeat(250)));
  assert.ok(long.length <= 253 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(long), long);
  assert.notEqual(long, workloadUsageName(w('shop', 'Deployment', `${'x'.repeat(249)}y`)));
  assert.match(workloadUsageName(w('shop', 'MyCRD', 'Web_1')), /^shop\.mycrd\.web-1-[0-9a-f]{12}$/);
});

test('ledger parsing keeps what it can of a hand-edited status', () => {
  const good = parseLedger({
    retired: { ingressBytes: '18446744073709551617', egressBytes: '2', ingressPackets: '3', egressPackets: '4' },
    retiredPods: 2,
    recentlyRetired: [{ uid: 'u1', at: '2026-01-01T00:00:00Z' }, { uid: 'u2' }],
  });
  assert.equal(good.retired.ingressBytes, 2n ** 64n + 1n, 'exact beyond 2^64');
  assert.deepEqual([...good.recent.keys()], ['u1']);
  assert.equal(good.problems.length, 1);
  const bad = parseLedger({ retired: { ingressBytes: 'lots' }, checkpoint: 'x', retiring: [{ uid: 'u' }] });
  assert.equal(bad.retired.ingressBytes, 0n);
  assert.equal(bad.problems.length, 3);
  assert.equal(parseLedger(undefined).problems.length, 0);
});
