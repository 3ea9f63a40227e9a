/**
 * A peer trie update that fails part-way leaves the previous entries in
 * force (issue 23). The failure is the kernel's own: the trie is an LPM trie
 * of PODMETER_MAX_PEERS entries, and the update asks for one more, so the
 * kernel refuses a write after tens of thousands have been made. Needs root
 * (loads bpf/podmeter.bpf.o; nothing is attached or pinned).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfObject, bpfObjectPath } from '../../agent/kernel/bpf.ts';
import { parsePrefix } from '../../agent/peers/cidr.ts';
import { SLOT } from '../../agent/peers/classes.ts';
import { PeerTrie, type TrieEntry } from '../../agent/peers/trie.ts';

/** PODMETER_MAX_PEERS in bpf/podmeter.h. */
const MAX_PEERS = 65536;

function entries(list: [string, number][]): Map<string, TrieEntry> {
  return new Map(
    list.map(([cidr, slot]) => {
      const prefix = parsePrefix(cidr);
      return [prefix.text, { prefix, slot }];
    }),
  );
}

test('a trie update the kernel refuses part-way (trie full) is undone: the previous entries stay, the error says so', (t) => {
  const obj = BpfObject.load(bpfObjectPath('podmeter'));
  const peers = obj.takeMap('podmeter_peers');
  const generation = obj.takeMap('podmeter_gen');
  t.after(() => {
    peers.close();
    generation.close();
    obj.close();
  });
  const trie = new PeerTrie(peers, generation);
  const before = entries([
    ['10.0.0.0/8', SLOT.node],
    ['192.168.0.0/16', SLOT.zone],
    ['fd00::/8', SLOT.service],
  ]);
  trie.apply(before);
  const generationBefore = trie.generation();

  // One more than fits: 10.0.0.0/8 changes class, 192.168.0.0/16 goes, and
  // MAX_PEERS /32s come (the kernel refuses the last one).
  const tooMany: [string, number][] = [
    ['10.0.0.0/8', SLOT['cross-zone']],
    ['fd00::/8', SLOT.service],
  ];
  for (let i = 0; tooMany.length < MAX_PEERS + 2; i++)
    tooMany.push([`100.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, SLOT.external]);
  assert.throws(
    () => trie.apply(entries(tooMany)),
    (err: Error) => {
      assert.match(err.message, /all undone: the trie holds what it held before/);
      assert.match(
        (err.cause as NodeJS.ErrnoException).code ?? '',
        /^(ENOSPC|E2BIG|ENOMEM)$/,
        `the kernel's refusal: ${String(err.cause)}`,
      );
      return true;
    },
  );
  const after = trie.entries();
  assert.deepEqual(
    [...after.values()].map((e) => [e.prefix.text, e.slot]).sort(),
    [...before.values()].map((e) => [e.prefix.text, e.slot]).sort(),
    'exactly the entries of before, with their classes',
  );
  // Classes the programs cached from the half-written trie are dropped.
  assert.notEqual(trie.generation(), generationBefore);

  // A later update that fits is applied whole.
  const next = entries([
    ['10.0.0.0/8', SLOT['cross-zone']],
    ['172.16.0.0/12', SLOT.node],
  ]);
  assert.deepEqual(trie.apply(next), { added: 1, changed: 1, removed: 2 });
  assert.deepEqual([...trie.entries().keys()].sort(), ['10.0.0.0/8', '172.16.0.0/12']);
});
