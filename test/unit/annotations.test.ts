/** The Pod annotations' contract (common/contract/annotations.ts): what agents write, the operator and `podmeter top` read back. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ANNOTATIONS, countsFromAnnotations, hasCounts, nodeMapBytes, podAnnotations } from '../../common/contract/annotations.ts';

test('counters from annotations: exact, missing is zero, malformed keeps the previous value', () => {
  const first = countsFromAnnotations({ 'podmeter.io/ingress-bytes': '9007199254740993', 'podmeter.io/egress-packets': '7' }, undefined);
  assert.equal(first.counts.ingressBytes, 9007199254740993n);
  assert.equal(first.counts.egressBytes, 0n);
  const next = countsFromAnnotations({ 'podmeter.io/ingress-bytes': '-5', 'podmeter.io/egress-packets': '08' }, first.counts);
  assert.deepEqual(next.malformed, ['podmeter.io/ingress-bytes', 'podmeter.io/egress-packets']);
  assert.equal(next.counts.ingressBytes, 9007199254740993n);
  assert.equal(next.counts.egressPackets, 7n);
});

test('what an agent writes reads back exactly, past 2^53', () => {
  const counts = { ingressBytes: 2n ** 64n + 1n, egressBytes: 3n, ingressPackets: 2n ** 53n + 1n, egressPackets: 0n };
  const written = podAnnotations(counts, 4096);
  assert.ok(hasCounts(written));
  assert.equal(written[ANNOTATIONS.bpfMapBytes], '4096');
  const read = countsFromAnnotations(written, undefined);
  assert.deepEqual(read, { counts, malformed: [] });
  assert.equal(podAnnotations(counts, 0)[ANNOTATIONS.bpfMapBytes], undefined, 'no map bytes: no annotation');
  assert.equal(hasCounts({ 'other.io/x': '1' }), false);
  assert.equal(nodeMapBytes({ [ANNOTATIONS.bpfMapBytes]: '123' }), 123n);
  assert.equal(nodeMapBytes({ [ANNOTATIONS.bpfMapBytes]: 'x' }), undefined);
});
