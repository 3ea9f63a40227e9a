// Inventory: listMaps/listPrograms see podmeter's objects; storage lookups of
// absent keys answer undefined rather than throwing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cgroupId, listMaps, listPrograms, possibleCpus } from '../../agent/kernel/bpf.ts';
import { PODMETER_SLOTS } from '../../agent/kernel/layout.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';

test('listMaps shows podmeter_stats as a percpu_cgroup_storage map', (t) => {
  const pm = loadPodmeter(t);
  const own = pm.map!.info();
  const listed = listMaps().find((m) => m.id === own.id);
  assert.ok(listed !== undefined, `map ${own.id} is listed`);
  assert.equal(listed.name, 'podmeter_stats');
  assert.equal(listed.typeName, 'percpu_cgroup_storage');
  assert.equal(listed.keySize, 16); // struct bpf_cgroup_storage_key: u64 cgroup id, u32 attach type, padding
  assert.equal(listed.valueSize, PODMETER_SLOTS * 16 + 40); // struct podmeter_slots: two u64 per class slot, then the peer cache
  assert.equal(listed.maxEntries, 0);
  assert.ok(listed.btfId > 0, 'has BTF');
  assert.deepEqual({ ...listed, memlock: 0 }, { ...own, memlock: 0 });
  assert.ok(possibleCpus() >= 1);
});

test('listPrograms shows both cgroup_skb programs, using the counters, the peer trie and its generation', (t) => {
  const pm = loadPodmeter(t);
  const mapId = pm.map!.info().id;
  const all = listPrograms();
  for (const direction of ['ingress', 'egress'] as const) {
    const own = pm.programs[direction].info();
    const listed = all.find((p) => p.id === own.id);
    assert.ok(listed !== undefined, `podmeter_${direction} (id ${own.id}) is listed`);
    assert.equal(listed.typeName, 'cgroup_skb');
    // The kernel keeps BPF_OBJ_NAME_LEN - 1 = 15 characters of a program's name.
    assert.equal(listed.name, `podmeter_${direction}`.slice(0, 15));
    assert.ok(listed.mapIds.includes(mapId), `uses podmeter_stats (${listed.mapIds.join(',')})`);
    assert.equal(listed.mapIds.length, 3);
  }
});

test('storage of absent keys: undefined, not a throw', (t) => {
  const cg = makeTestCgroup(t);
  const other = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  const map = pm.map!;
  assert.deepEqual(map.keys(), []);
  assert.equal(map.lookup(0n, 'egress'), undefined);
  assert.equal(map.read(0n, 'ingress'), undefined);
  assert.equal(map.read(2n ** 64n - 1n, 'egress'), undefined);
  assert.equal(map.read(cg.id, 'egress'), undefined); // a real cgroup, nothing attached yet

  pm.attach(cg, ['egress']);
  assert.deepEqual(map.keys(), [{ cgroupId: cg.id, direction: 'egress' }]);
  assert.deepEqual(
    map.read(cg.id, 'egress'),
    Array.from({ length: PODMETER_SLOTS }, () => ({ bytes: 0n, packets: 0n })),
  );
  assert.equal(map.lookup(cg.id, 'egress')?.length, possibleCpus());
  assert.equal(map.read(cg.id, 'ingress'), undefined); // the other direction is a separate key
  assert.equal(map.read(other.id, 'egress'), undefined);
  assert.equal(cgroupId(cg.path), cg.id);
});
