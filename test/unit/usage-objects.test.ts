/** The usage custom resources' contract (common/contract/usage.ts, workloads.ts): object names and reading a hand-edited status. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseLedger, statusTotals } from '../../common/contract/usage.ts';
import {
  WORKLOAD_KIND_MAX,
  WORKLOAD_NAME_MAX,
  workloadKind,
  workloadName,
  workloadUsageName,
} from '../../common/contract/workloads.ts';
import { toStrings, zero } from '../../common/contract/counts.ts';

test('WorkloadUsage names: readable, valid, bounded', () => {
  const w = (namespace: string, kind: string, name: string) => ({ namespace, kind, name, key: '' });
  assert.equal(workloadUsageName(w('shop', 'Deployment', 'web')), 'shop.deployment.web');
  const long = workloadUsageName(w('shop', 'Deployment', 'x'.repeat(250)));
  assert.ok(long.length <= 253 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(long), long);
  assert.notEqual(long, workloadUsageName(w('shop', 'Deployment', `${'x'.repeat(249)}y`)));
  assert.match(workloadUsageName(w('shop', 'MyCRD', 'Web_1')), /^shop\.mycrd-[0-9a-f]{16}\.web-1$/);
  assert.equal(workloadUsageName(w('shop', 'StatefulSet', 'db')), 'shop.statefulset.db');
  assert.equal(workloadUsageName(w('shop', 'Rollout', 'web')), 'shop.rollout.web');
  // Not an object name (each dot-separated label alphanumeric at both ends): hashed, and the result is one.
  for (const name of ['web-.x', 'a..b', '-web', 'Web', 'x.']) {
    const n = workloadUsageName(w('shop', 'Deployment', name));
    assert.match(n, /^shop\.deployment-[0-9a-f]{16}(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, `${name} -> ${n}`);
  }
});

/** Kinds whose spellings differ only in case (and one-letter ones). */
const CASED_KINDS = [
  'Deployment',
  'deployment',
  'DeployMent',
  'Job',
  'JOB',
  'Rollout',
  'RollOut',
  'A',
  'a',
  'AB',
  'Ab',
];

test('WorkloadUsage names: two different workloads never share one (kinds that differ only in case, names that look hashed)', () => {
  const w = (kind: string, name: string) => ({ namespace: 'shop', kind, name, key: `shop/${kind}/${name}` });
  const owners = [
    w('Deployment', 'web'),
    w('DEPLOYMENT', 'web'),
    w('deployment', 'web'),
    w('StatefulSet', 'db'),
    w('Statefulset', 'db'),
    w('STATEFULSET', 'db'),
    w('MyCRD', 'web'),
    w('MyCrd', 'web'),
    w('Mycrd', 'web'),
    w('Deployment', 'Web'),
  ];
  // A readable name crafted to look like another owner's hashed one.
  const hashed = workloadUsageName(w('DEPLOYMENT', 'web'));
  const [, segment] = hashed.split('.');
  owners.push(w('Deployment', `${segment!.split('-')[1]}.web`), w(segment!, 'web'));
  const names = new Map<string, string>();
  for (const o of owners) {
    const n = workloadUsageName(o);
    assert.ok(n.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(n), n);
    assert.equal(names.get(n), undefined, `${o.key} and ${names.get(n)} both map to ${n}`);
    names.set(n, o.key);
  }
  fc.assert(
    fc.property(
      fc.constantFrom(...CASED_KINDS),
      fc.constantFrom(...CASED_KINDS),
      fc.stringMatching(/^[-a-zA-Z0-9._]{1,20}$/),
      fc.stringMatching(/^[-a-zA-Z0-9._]{1,20}$/),
      (k1, k2, n1, n2) => (k1 === k2 && n1 === n2) || workloadUsageName(w(k1, n1)) !== workloadUsageName(w(k2, n2)),
    ),
    { numRuns: 20_000 },
  );
});

test('owner kinds and names fit the CRD fields: kept when they fit, else cut with a hash of the whole (same in, same out; two never collide)', () => {
  assert.equal(workloadKind('Deployment'), 'Deployment');
  assert.equal(workloadKind('K'.repeat(WORKLOAD_KIND_MAX)), 'K'.repeat(WORKLOAD_KIND_MAX));
  const longKind = workloadKind('K'.repeat(WORKLOAD_KIND_MAX + 1));
  assert.ok(longKind.length <= WORKLOAD_KIND_MAX && /^[A-Za-z][A-Za-z0-9]*$/.test(longKind), longKind);
  assert.equal(workloadKind('K'.repeat(WORKLOAD_KIND_MAX + 1)), longKind, 'deterministic');
  assert.notEqual(workloadKind(`${'K'.repeat(500)}a`), workloadKind(`${'K'.repeat(500)}b`));
  // Not an identifier (a forged owner reference): made one, so a dot cannot make WorkloadUsage names ambiguous.
  for (const kind of ['a.b', 'Dep loyment', '9lives', '', '...']) {
    const k = workloadKind(kind);
    assert.ok(k.length <= WORKLOAD_KIND_MAX && /^[A-Za-z][A-Za-z0-9]*$/.test(k), `${kind} -> ${k}`);
  }
  assert.notEqual(workloadKind('a.b'), workloadKind('ab'));
  assert.equal(workloadName('web'), 'web');
  assert.equal(workloadName('x'.repeat(WORKLOAD_NAME_MAX)), 'x'.repeat(WORKLOAD_NAME_MAX));
  const a = workloadName(`${'x'.repeat(300)}a`);
  const b = workloadName(`${'x'.repeat(300)}b`);
  assert.equal(a.length, WORKLOAD_NAME_MAX);
  assert.notEqual(a, b);
  assert.equal(workloadName(`${'x'.repeat(300)}a`), a);
  assert.equal(workloadName(a), a, 'a fitted name stays as it is');
  // Their WorkloadUsage objects: distinct, valid names.
  const w = (name: string) => ({ namespace: 'shop', kind: 'Deployment', name, key: '' });
  const [na, nb] = [workloadUsageName(w(a)), workloadUsageName(w(b))];
  assert.notEqual(na, nb);
  for (const n of [na, nb]) assert.ok(n.length <= 253 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(n), n);
});

test('ledger parsing keeps what it can of a hand-edited status', () => {
  const good = parseLedger({
    retired: { ingressBytes: '18446744073709551617', egressBytes: '2', ingressPackets: '3', egressPackets: '4' },
    retiredPods: 2,
    retiredThrough: [{ node: 'n1', seq: 7 }, { node: 'n2' }],
  });
  assert.equal(good.retired.ingressBytes, 2n ** 64n + 1n, 'exact beyond 2^64');
  assert.deepEqual([...good.marks], [['n1', 7]]);
  assert.equal(good.problems.length, 1);
  const bad = parseLedger({ retired: { ingressBytes: 'lots' }, checkpoint: 'x', retiring: [{ uid: 'u' }] });
  assert.equal(bad.retired.ingressBytes, 0n);
  assert.equal(bad.problems.length, 3);
  assert.equal(parseLedger(undefined).problems.length, 0);
});

test('billed classes in a status: every one at the top level (exact and human), only those not zero in ledger entries; a status without them reads as zero', () => {
  const total = {
    ...zero(),
    ingressBytes: 10n,
    egressBytes: 2n ** 60n,
    egressCrossZoneBytes: 2n ** 59n + 1n,
    egressExternalBytes: 3n * 2n ** 20n,
  };
  const retired = { ...zero(), egressBytes: 5n, egressCrossRegionBytes: 5n };
  const status = statusTotals(total, retired, 3, 1, 'op');
  assert.equal(status.egressCrossZoneBytes, String(2n ** 59n + 1n));
  assert.equal(status.egressCrossRegionBytes, '0', 'zero too: the printer columns and readers always find it');
  assert.equal(status.egressExternal, '3.00 MiB');
  assert.equal(status.egressCrossRegion, '0 B');
  assert.deepEqual(status.retired, {
    ingressBytes: '0',
    egressBytes: '5',
    ingressPackets: '0',
    egressPackets: '0',
    egressCrossRegionBytes: '5',
  });
  const entry = { uid: 'u1', namespace: 'shop', workloadKind: 'Deployment', workload: 'web', ...toStrings(total) };
  const read = parseLedger({
    ...status,
    checkpoint: [entry],
    retiring: [
      {
        uid: 'u2',
        namespace: 'shop',
        workloadKind: 'Deployment',
        workload: 'web',
        ...toStrings(retired),
        at: '2026-01-01T00:00:00Z',
        rolledUp: false,
      },
    ],
  });
  assert.deepEqual(read.problems, []);
  assert.deepEqual(read.retired, retired);
  assert.deepEqual(read.checkpoint.get('u1')!.counts, total);
  assert.deepEqual(read.retiring.get('u2')!.counts, retired);
  // Written by an operator that predates classes.
  const old = parseLedger({
    retired: { ingressBytes: '1', egressBytes: '2', ingressPackets: '3', egressPackets: '4' },
    checkpoint: [
      {
        uid: 'u1',
        namespace: 'shop',
        workloadKind: 'Pod',
        workload: 'u1',
        ingressBytes: '1',
        egressBytes: '2',
        ingressPackets: '1',
        egressPackets: '1',
      },
    ],
  });
  assert.deepEqual(old.problems, []);
  assert.equal(old.retired.egressExternalBytes, 0n);
  assert.equal(old.checkpoint.get('u1')!.counts.egressCrossZoneBytes, 0n);
  assert.equal(
    parseLedger({ retired: { ...status.retired, egressExternalBytes: 'x' } }).problems.length,
    1,
    'a malformed class is reported',
  );
});
