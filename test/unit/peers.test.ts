// Peer classes without the kernel: CIDR keys, class names, slot assignment,
// configuration entries, and how Nodes become classes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assignSlots, classNameProblem, MAX_NAMED_CLASSES, SlotNames } from '../../agent/peers/classes.ts';
import { keyPrefix, parsePrefix, prefixKey } from '../../agent/peers/cidr.ts';
import { clusterPeers, nodeClass, nodePeers, type NodePeers } from '../../agent/peers/cluster.ts';
import { mergePeerClasses, parsePeerClassEntries } from '../../agent/peers/config.ts';

test('prefixes: IPv4 mapped into 128 bits, host bits cleared, keys round-trip', () => {
  assert.deepEqual([parsePrefix('10.1.2.3/8').text, parsePrefix('10.1.2.3/8').bits], ['10.0.0.0/8', 104]);
  assert.deepEqual([parsePrefix('fd00::1/64').text, parsePrefix('fd00::1/64').bits], ['fd00::/64', 64]);
  assert.equal(parsePrefix('192.0.2.7').text, '192.0.2.7/32');
  assert.equal(parsePrefix('2001:db8::5').text, '2001:db8::5/128');
  for (const text of ['10.0.0.0/8', '0.0.0.0/0', 'fd00:10:244:1::/64', '::/0', '2001:db8:0:1::1/128']) {
    assert.equal(keyPrefix(prefixKey(parsePrefix(text))).text, text);
  }
  assert.deepEqual(Array.from(parsePrefix('1.2.3.4').addr), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4]);
  for (const bad of ['10.0.0.0/33', 'fd00::/129', '1.2.3/8', 'x', '10.0.0.0/', '10.0.0.0/-1', ''])
    assert.throws(() => parsePrefix(bad), bad);
});

test('class names: DNS-label shaped, not built in', () => {
  assert.equal(classNameProblem('object-storage'), undefined);
  for (const bad of ['', 'Storage', '-a', 'a-', 'a_b', 'x'.repeat(64), 'zone', 'loopback'])
    assert.notEqual(classNameProblem(bad), undefined, bad);
});

test('slots: recorded names keep their slot, new ones take free slots, a full table is an error', () => {
  assert.deepEqual(assignSlots([], ['a', 'b']).slice(0, 3), ['a', 'b', undefined]);
  assert.deepEqual(assignSlots(['a', 'b'], ['b', 'c']).slice(0, 3), ['a', 'b', 'c']); // 'a' keeps its slot (its counts are there)
  const full = Array.from({ length: MAX_NAMED_CLASSES }, (_, i) => `c${i}`);
  assert.throws(() => assignSlots(full, ['new']), /all 8 named class slots are taken/);
  const names = new SlotNames(['storage']);
  assert.equal(names.slotOf('storage'), 7);
  assert.equal(names.name(0), 'loopback');
  const one = { bytes: 1n, packets: 1n };
  // bytes, packets of slots 0..7 (a direction's sums): loopback, external and the first named slot have one packet.
  const sums = BigUint64Array.from([1n, 1n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 1n, 1n, 1n, 1n]);
  assert.deepEqual(names.byClass(sums), {
    loopback: one,
    external: one,
    storage: one,
  });
});

test('configuration entries: several per flag, errors name the entry', () => {
  const got = parsePeerClassEntries('storage=192.0.2.0/24, 2001:db8::/32\nonprem=10.0.0.0/8;backup=172.16.0.0/12');
  assert.deepEqual(
    got.map((s) => [s.name, s.prefixes.map((p) => p.text)]),
    [
      ['storage', ['192.0.2.0/24', '2001:db8::/32']],
      ['onprem', ['10.0.0.0/8']],
      ['backup', ['172.16.0.0/12']],
    ],
  );
  assert.throws(() => parsePeerClassEntries('storage=10.0.0.0/8,bogus'), /"bogus" is not an IPv4 or IPv6/);
  assert.throws(() => parsePeerClassEntries('storage='), /no CIDR/);
  assert.throws(
    () => mergePeerClasses(parsePeerClassEntries('a=1.0.0.0/8'), parsePeerClassEntries('a=2.0.0.0/8')),
    /given twice/,
  );
  const nine = Array.from({ length: 9 }, (_, i) => `c${i}=10.${i}.0.0/16`).join(';');
  assert.throws(() => mergePeerClasses(parsePeerClassEntries(nine)), /at most 8/);
});

test('Nodes to classes: this node, same zone, other zone, other region; bad podCIDRs and addresses are skipped and reported', () => {
  const bad: string[] = [];
  const addresses = [
    '10.0.0.1',
    'fd00::1',
    '0.0.0.0/0',
    '::/0',
    '10.0.0.0/8',
    '10.0.0.2/32',
    ' 10.0.0.3',
    'fe80::1%eth0',
    'garbage',
    '',
  ];
  const self = nodePeers(
    {
      metadata: { name: 'me', labels: { 'topology.kubernetes.io/zone': 'a', 'topology.kubernetes.io/region': 'r1' } },
      spec: { podCIDRs: ['10.244.1.0/24', 'garbage'] },
      status: {
        addresses: [
          ...addresses.map((address, i) => ({ type: i % 2 === 0 ? 'InternalIP' : 'ExternalIP', address })),
          { type: 'Hostname', address: 'me' },
        ],
      },
    },
    (field, value) => bad.push(`${field} ${value}`),
  )!;
  assert.deepEqual(bad, ['podCIDR garbage', ...addresses.slice(2).map((a) => `address ${a}`)]);
  assert.deepEqual(
    self.prefixes.map((p) => p.text),
    ['10.244.1.0/24', '10.0.0.1/32', 'fd00::1/128'],
  );
  const other = (name: string, zone?: string, region?: string): NodePeers => ({
    name,
    zone,
    region,
    prefixes: [parsePrefix(`10.9.${name.length}.0/24`)],
  });
  assert.equal(nodeClass(self, self, 'me'), 'node');
  assert.equal(nodeClass(self, other('b', 'a', 'r1'), 'me'), 'zone');
  assert.equal(nodeClass(self, other('c', 'b', 'r1'), 'me'), 'cross-zone');
  assert.equal(nodeClass(self, other('d', 'c', 'r2'), 'me'), 'cross-region');
  assert.equal(nodeClass(self, other('e'), 'me'), 'cross-zone'); // unlabelled, while this node has a zone
  assert.equal(nodeClass(undefined, other('f'), 'me'), 'zone'); // no labels anywhere: one zone
  const peers = clusterPeers([self, other('bb', 'a', 'r1')], 'me', [parsePrefix('10.96.0.0/16')]);
  assert.deepEqual(
    peers.node?.map((p) => p.text),
    ['10.244.1.0/24', '10.0.0.1/32', 'fd00::1/128'],
  );
  assert.deepEqual(
    peers.zone?.map((p) => p.text),
    ['10.9.2.0/24'],
  );
  assert.deepEqual(
    peers.service?.map((p) => p.text),
    ['10.96.0.0/16'],
  );
});
