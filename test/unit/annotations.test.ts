/** The Pod annotations' contract (common/contract/annotations.ts): what agents write, the operator and `podmeter top` read back. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ANNOTATIONS,
  countsFromAnnotations,
  hasCounts,
  nodeMapBytes,
  podAnnotations,
} from '../../common/contract/annotations.ts';

test('counters from annotations: exact, missing is zero, malformed keeps the previous value', () => {
  const first = countsFromAnnotations(
    { 'podmeter.io/ingress-bytes': '9007199254740993', 'podmeter.io/egress-packets': '7' },
    undefined,
  );
  assert.equal(first.counts.ingressBytes, 9007199254740993n);
  assert.equal(first.counts.egressBytes, 0n);
  const next = countsFromAnnotations(
    { 'podmeter.io/ingress-bytes': '-5', 'podmeter.io/egress-packets': '08' },
    first.counts,
  );
  assert.deepEqual(next.malformed, [
    { annotation: 'podmeter.io/ingress-bytes', problem: 'not-decimal' },
    { annotation: 'podmeter.io/egress-packets', problem: 'not-decimal' },
  ]);
  const big = countsFromAnnotations(
    { 'podmeter.io/ingress-bytes': '1'.repeat(31), 'podmeter.io/egress-bytes': '18446744073709551616' },
    first.counts,
  );
  assert.deepEqual(
    big.malformed.map((m) => m.problem),
    ['above-u64', 'above-u64'],
  );
  assert.equal(big.counts.ingressBytes, 9007199254740993n, 'past 2^64-1: ignored, the previous value stays');
  assert.equal(next.counts.ingressBytes, 9007199254740993n);
  assert.equal(next.counts.egressPackets, 7n);
});

test('what an agent writes reads back exactly, past 2^53 and up to 2^64-1', () => {
  const counts = {
    ingressBytes: 2n ** 64n - 1n,
    egressBytes: 2n ** 60n,
    ingressPackets: 2n ** 53n + 1n,
    egressPackets: 0n,
    egressCrossZoneBytes: 2n ** 53n + 3n,
    egressCrossRegionBytes: 0n,
    egressExternalBytes: 5n,
  };
  const written = podAnnotations(counts, 4096);
  assert.ok(hasCounts(written));
  assert.equal(written[ANNOTATIONS.bpfMapBytes], '4096');
  const read = countsFromAnnotations(written, undefined);
  assert.deepEqual(read, { counts, malformed: [] });
  assert.equal(podAnnotations(counts, 0)[ANNOTATIONS.bpfMapBytes], undefined, 'no map bytes: no annotation');
  assert.equal(hasCounts({ 'other.io/x': '1' }), false);
  assert.equal(nodeMapBytes({ [ANNOTATIONS.bpfMapBytes]: '123' }), 123n);
  assert.equal(nodeMapBytes({ [ANNOTATIONS.bpfMapBytes]: 'x' }), undefined);
  assert.equal(nodeMapBytes({ [ANNOTATIONS.bpfMapBytes]: '1'.repeat(21) }), undefined);
});

test('billed classes: only those not zero are written, absent beside the totals reads as zero', () => {
  const counts = {
    ingressBytes: 10n,
    egressBytes: 100n,
    ingressPackets: 1n,
    egressPackets: 2n,
    egressCrossZoneBytes: 0n,
    egressCrossRegionBytes: 0n,
    egressExternalBytes: 60n,
  };
  const written = podAnnotations(counts, undefined);
  assert.deepEqual(Object.keys(written).sort(), [
    'podmeter.io/egress-bytes',
    'podmeter.io/egress-external-bytes',
    'podmeter.io/egress-packets',
    'podmeter.io/ingress-bytes',
    'podmeter.io/ingress-packets',
  ]);
  assert.equal(written[ANNOTATIONS.egressExternalBytes], '60');
  // An agent that predates classes (or a pod with none yet): zero, not the previous value.
  const previous = { ...counts, egressCrossZoneBytes: 7n };
  const read = countsFromAnnotations(
    { 'podmeter.io/ingress-bytes': '10', 'podmeter.io/egress-bytes': '100' },
    previous,
  );
  assert.equal(read.counts.egressCrossZoneBytes, 0n);
  assert.equal(read.counts.egressExternalBytes, 0n);
  // No counters at all (not written yet, or removed by hand): nothing is read, the previous values stay.
  assert.deepEqual(countsFromAnnotations({}, previous).counts, previous);
  // A malformed class value is reported and keeps the previous one.
  const bad = countsFromAnnotations(
    { 'podmeter.io/egress-bytes': '100', [ANNOTATIONS.egressCrossZoneBytes]: '1e3' },
    previous,
  );
  assert.deepEqual(bad.malformed, [{ annotation: ANNOTATIONS.egressCrossZoneBytes, problem: 'not-decimal' }]);
  assert.equal(bad.counts.egressCrossZoneBytes, 7n);
});
