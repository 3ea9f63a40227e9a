import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nodeFinals } from '../../agent/kube/finals.ts';
import type { Unit } from '../../agent/counting/unit.ts';
import { podUnit, uidOf } from '../helpers/units.ts';
import { encodeNodeFinals, FINALS_WINDOW_MS, MAX_FINALS, parseNodeFinals } from '../../common/contract/finals.ts';

const NOW = Date.parse('2026-11-22T12:00:00Z');

function unit(i: number, over: Partial<Unit> = {}): Unit {
  return podUnit(i, {
    state: 'terminated',
    terminatedAt: NOW - i * 1000,
    network: {
      ingress: { bytes: BigInt(i) * 1000n, packets: BigInt(i) },
      egress: { bytes: 2n ** 60n + BigInt(i), packets: 1n },
    },
    byClass: { ingress: {}, egress: {} },
    ...over,
  });
}

test('nodeFinals: terminated pods with traffic in the window, newest first, capped; named from the Pod', () => {
  const units = [
    unit(3),
    unit(1),
    unit(2, { state: 'live' }),
    unit(4, { kind: 'cgroup' }),
    unit(5, { network: { ingress: { bytes: 0n, packets: 0n }, egress: { bytes: 0n, packets: 0n } } }),
    unit(6, { terminatedAt: NOW - FINALS_WINDOW_MS - 1 }),
    unit(7, { uid: 'f00dfeedf00dfeedf00dfeedf00dfeed' }), // a static pod's config hash, its mirror Pod unknown
    unit(8, { uid: 'abcdefabcdefabcdefabcdefabcdefab' }), // a static pod's config hash, mirror Pod known
  ];
  const pods = new Map([
    [uidOf(1), { namespace: 'shop', name: 'web-1', uid: uidOf(1), owner: { kind: 'ReplicaSet', name: 'web-7f' } }],
    ['abcdefabcdefabcdefabcdefabcdefab', { namespace: 'kube-system', name: 'etcd-n1', uid: uidOf(99) }],
  ]);
  const finals = nodeFinals(units, (uid) => pods.get(uid), NOW);
  assert.deepEqual(
    finals.map((f) => f.uid),
    [uidOf(1), uidOf(3), uidOf(99)],
  );
  assert.deepEqual(finals[0], {
    uid: uidOf(1),
    namespace: 'shop',
    name: 'web-1',
    owner: { kind: 'ReplicaSet', name: 'web-7f' },
    terminated: new Date(NOW - 1000).toISOString(),
    ingressBytes: '1000',
    egressBytes: String(2n ** 60n + 1n),
    ingressPackets: '1',
    egressPackets: '1',
  });
  assert.equal(finals[1]!.namespace, undefined, 'a Pod no longer known: uid only');
  const many = Array.from({ length: MAX_FINALS + 20 }, (_, i) => unit(i + 1));
  const capped = nodeFinals(many, () => undefined, NOW);
  assert.equal(capped.length, MAX_FINALS);
  assert.equal(capped.at(-1)!.uid, uidOf(MAX_FINALS), 'the oldest are left out');
});

test('nodeFinals: the annotation stays under 32 KB with 50 pods of 63-character names and 20-digit counters in every billed class', () => {
  const long = (c: string) => c.repeat(63);
  const huge = { bytes: 18_446_744_073_709_551_615n, packets: 18_446_744_073_709_551_615n };
  const peers = { ingress: {}, egress: { 'cross-zone': huge, 'cross-region': huge, external: huge } };
  const units = Array.from({ length: MAX_FINALS }, (_, i) =>
    unit(i + 1, { network: { ingress: huge, egress: huge }, byClass: peers }),
  );
  const text = JSON.stringify(
    nodeFinals(
      units,
      (uid) => ({ namespace: long('n'), name: long('p'), uid, owner: { kind: 'ReplicaSet', name: long('r') } }),
      NOW,
    ),
  );
  assert.ok(text.length < 32_000, `${text.length} bytes`);
});

test('parseNodeFinals: round trip exact; bad entries dropped and counted, the rest kept', () => {
  const finals = nodeFinals([unit(1), unit(2)], () => undefined, NOW);
  const parsed = parseNodeFinals(encodeNodeFinals(finals) ?? undefined);
  assert.equal(parsed.problems, 0);
  assert.equal(encodeNodeFinals([]), null, 'no finals: the annotation is removed');
  assert.deepEqual(parsed.finals[0], {
    uid: uidOf(1),
    namespace: undefined,
    name: undefined,
    owner: null,
    terminatedAt: NOW - 1000,
    counts: {
      ingressBytes: 1000n,
      egressBytes: 2n ** 60n + 1n,
      ingressPackets: 1n,
      egressPackets: 1n,
      egressCrossZoneBytes: 0n,
      egressCrossRegionBytes: 0n,
      egressExternalBytes: 0n,
    },
  });
  const mixed = parseNodeFinals(
    JSON.stringify([{ uid: 'x', ingressBytes: '-1' }, null, 7, finals[1], { ...finals[0], terminated: 'yesterday' }]),
  );
  assert.equal(mixed.problems, 4);
  assert.deepEqual(
    mixed.finals.map((f) => f.uid),
    [uidOf(2)],
  );
  assert.deepEqual(parseNodeFinals('{not json'), { finals: [], problems: 1, excess: 0 });
  assert.deepEqual(parseNodeFinals('{"a":1}'), { finals: [], problems: 1, excess: 0 });
  assert.deepEqual(parseNodeFinals(undefined), { finals: [], problems: 0, excess: 0 });
  // Counts are a pod's: unsigned 64-bit, as on Pods (a 30-digit value would pass a total's rule).
  const beyond = parseNodeFinals(
    JSON.stringify([
      { ...finals[0], ingressBytes: '1'.repeat(30) },
      { ...finals[1], egressBytes: '18446744073709551616' },
    ]),
  );
  assert.deepEqual([beyond.finals.length, beyond.problems], [0, 2]);
  // More than an agent writes: the first MAX_FINALS are read, the rest ignored and counted.
  const flood = parseNodeFinals(
    JSON.stringify(Array.from({ length: MAX_FINALS + 7 }, (_, i) => ({ ...finals[0], uid: uidOf(i + 1) }))),
  );
  assert.deepEqual([flood.finals.length, flood.problems, flood.excess], [MAX_FINALS, 0, 7]);
});

test('finals carry the billed classes (egress bytes to cross-zone, cross-region, external); finals without them read as zero', () => {
  const peers = {
    ingress: { external: { bytes: 5n, packets: 1n } },
    egress: {
      node: { bytes: 9n, packets: 1n },
      'cross-zone': { bytes: 2n ** 60n, packets: 1n },
      external: { bytes: 700n, packets: 3n },
      loopback: { bytes: 4n, packets: 1n },
    },
  };
  const [final] = nodeFinals([unit(1, { byClass: peers })], () => undefined, NOW);
  assert.equal(final!.egressCrossZoneBytes, String(2n ** 60n));
  assert.equal(final!.egressExternalBytes, '700');
  assert.equal('egressCrossRegionBytes' in final!, false, 'a zero class is left out');
  const [parsed] = parseNodeFinals(encodeNodeFinals([final!]) ?? undefined).finals;
  assert.equal(parsed!.counts.egressCrossZoneBytes, 2n ** 60n);
  assert.equal(parsed!.counts.egressCrossRegionBytes, 0n);
  assert.equal(parsed!.counts.egressExternalBytes, 700n);
  // Written by an agent that predates classes: read, classes zero.
  const old = parseNodeFinals(
    JSON.stringify([
      {
        uid: uidOf(2),
        terminated: new Date(NOW).toISOString(),
        ingressBytes: '1',
        egressBytes: '2',
        ingressPackets: '1',
        egressPackets: '1',
      },
    ]),
  );
  assert.equal(old.problems, 0);
  assert.equal(old.finals[0]!.counts.egressExternalBytes, 0n);
  // A malformed class value makes the entry unreadable like a malformed total.
  assert.equal(parseNodeFinals(JSON.stringify([{ ...final, egressExternalBytes: '-1' }])).problems, 1);
});
