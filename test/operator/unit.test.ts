/**
 * The operator's pure parts, without a cluster: owner chains, object names,
 * ledger parsing of hand-edited statuses, the budget split, counters from
 * annotations, Lease times, and `podmeter top`'s dispatch and sorting.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Interner, OwnerIndex } from '../../operator/owners.ts';
import { parseLedger, workloadUsageName } from '../../common/contract/usage.ts';
import { perNodeRate } from '../../operator/budget.ts';
import { countsFromAnnotations } from '../../common/contract/annotations.ts';
import { microTime } from '../../operator/election.ts';
import { rateOf } from '../../common/contract/budget.ts';
import { clusterTopTarget, sortRows, type TopClusterRow } from '../../cli/topCluster.ts';

const silent = pino({ level: 'silent' });
const meta = (name: string, owner?: [string, string]) => ({ metadata: { name, namespace: 'ns', ...(owner ? { ownerReferences: [{ kind: owner[0], name: owner[1], controller: true }] } : {}) } });

test('owner chains: Deployment, CronJob, bare, missing, cycle, mirror pod', () => {
  const owners = new OwnerIndex(silent, new Interner());
  owners.put('ReplicaSet', meta('web-1', ['Deployment', 'web']));
  owners.put('Job', meta('nightly-1', ['CronJob', 'nightly']));
  owners.put('Job', meta('once'));
  owners.put('ReplicaSet', meta('a', ['ReplicaSet', 'b']));
  owners.put('ReplicaSet', meta('b', ['ReplicaSet', 'a']));
  const r = (kind: string | null, name = '') => owners.resolve('ns', 'pod-x', kind === null ? null : { kind, name });
  assert.equal(r('ReplicaSet', 'web-1').workload.key, 'ns/Deployment/web');
  assert.equal(r('Job', 'nightly-1').workload.key, 'ns/CronJob/nightly');
  assert.equal(r('Job', 'once').workload.key, 'ns/Job/once');
  assert.equal(r('StatefulSet', 'db').workload.key, 'ns/StatefulSet/db');
  assert.equal(r(null).workload.key, 'ns/Pod/pod-x');
  assert.equal(r('Node', 'node-1').workload.key, 'ns/Pod/pod-x', 'a static pod\'s mirror is its own workload');
  const missing = r('ReplicaSet', 'gone');
  assert.deepEqual([missing.workload.key, missing.missing], ['ns/ReplicaSet/gone', true]);
  const cycle = r('ReplicaSet', 'a');
  assert.deepEqual([cycle.workload.key, cycle.missing], ['ns/ReplicaSet/a', false]);
  owners.remove('ReplicaSet', meta('web-1'));
  assert.equal(r('ReplicaSet', 'web-1').missing, true);
});

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

test('budget: an even split that never exceeds the maximum; agents read it strictly', () => {
  for (const [max, nodes] of [[50, 3], [50, 7], [50, 150_000], [1, 3], [50, 0]] as const) {
    const rate = perNodeRate(max, nodes);
    assert.ok(rate * Math.max(1, nodes) <= max + 1e-9 && rate > 0, `${max}/${nodes} -> ${rate}`);
    assert.equal(rateOf({ writesPerSecondPerNode: String(rate) }), rate);
  }
  assert.equal(rateOf({ writesPerSecondPerNode: '-1' }), undefined);
  assert.equal(rateOf({ writesPerSecondPerNode: 'fast' }), undefined);
  assert.equal(rateOf({}), undefined);
});

test('counters from annotations: exact, missing is zero, malformed keeps the previous value', () => {
  const first = countsFromAnnotations({ 'podmeter.io/ingress-bytes': '9007199254740993', 'podmeter.io/egress-packets': '7' }, undefined);
  assert.equal(first.counts.ingressBytes, 9007199254740993n);
  assert.equal(first.counts.egressBytes, 0n);
  const next = countsFromAnnotations({ 'podmeter.io/ingress-bytes': '-5', 'podmeter.io/egress-packets': '08' }, first.counts);
  assert.deepEqual(next.malformed, ['podmeter.io/ingress-bytes', 'podmeter.io/egress-packets']);
  assert.equal(next.counts.ingressBytes, 9007199254740993n);
  assert.equal(next.counts.egressPackets, 7n);
});

test('Lease MicroTime has six fractional digits', () => {
  assert.equal(microTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), '2026-01-02T03:04:05.678000Z');
});

test('podmeter top: cluster mode from the first positional; sorting by total with exact bigints', () => {
  assert.equal(clusterTopTarget(['pods']), 'pods');
  assert.equal(clusterTopTarget(['--sort', 'name', 'ns']), 'namespaces');
  assert.equal(clusterTopTarget(['-A', 'wl']), 'workloads');
  assert.equal(clusterTopTarget(['--agent', 'http://127.0.0.1:9471', '--once']), undefined);
  assert.equal(clusterTopTarget(['constructor']), undefined);
  const row = (name: string, ingress: bigint): TopClusterRow => ({ name, ingressBytes: ingress, egressBytes: 0n, ingressPackets: 0n, egressPackets: 0n });
  const sorted = sortRows([row('a', 2n ** 60n), row('b', 2n ** 60n + 1n), row('c', 5n)], 'total');
  assert.deepEqual(sorted.map((r) => r.name), ['b', 'a', 'c'], 'differences below 2^-53 of the total still sort');
});
