// Inventory: listMaps/listPrograms see podmeter's objects; storage lookups of
// absent keys answer undefined rather than throwing; many cgroups read in one
// call read as each alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cgroupId, listMaps, listPrograms, possibleCpus } from '../../agent/kernel/bpf.ts';
import { PODMETER_SLOTS, PODMETER_STRUCTS } from '../../agent/kernel/contract.generated.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { udpExchange } from '../helpers/traffic.ts';

test('listMaps shows podmeter_stats as a percpu_cgroup_storage map', (t) => {
  const pm = loadPodmeter(t);
  const own = pm.stats!.info();
  const listed = listMaps().find((m) => m.id === own.id);
  assert.ok(listed !== undefined, `map ${own.id} is listed`);
  assert.equal(listed.name, 'podmeter_stats');
  assert.equal(listed.typeName, 'percpu_cgroup_storage');
  assert.equal(listed.keySize, 16); // struct bpf_cgroup_storage_key: u64 cgroup id, u32 attach type, padding
  assert.equal(listed.valueSize, PODMETER_STRUCTS.podmeter_slots.size); // the object's BTF and the generated layout agree
  assert.equal(listed.maxEntries, 0);
  assert.ok(listed.btfId > 0, 'has BTF');
  assert.deepEqual({ ...listed, memlock: 0 }, { ...own, memlock: 0 });
  assert.ok(possibleCpus() >= 1);
});

test('listPrograms shows both cgroup_skb programs, using the counters, the peer trie and its generation, and the flow maps', (t) => {
  const pm = loadPodmeter(t);
  const mapId = pm.stats!.info().id;
  const all = listPrograms();
  for (const direction of ['ingress', 'egress'] as const) {
    const own = pm.programs[direction].info();
    const listed = all.find((p) => p.id === own.id);
    assert.ok(listed !== undefined, `podmeter_${direction} (id ${own.id}) is listed`);
    assert.equal(listed.typeName, 'cgroup_skb');
    // The kernel keeps BPF_OBJ_NAME_LEN - 1 = 15 characters of a program's name.
    assert.equal(listed.name, `podmeter_${direction}`.slice(0, 15));
    assert.ok(listed.mapIds.includes(mapId), `uses podmeter_stats (${listed.mapIds.join(',')})`);
    // podmeter_stats, _peers, _gen; the Service flows' podmeter_flows, _flow_misses, _units.
    assert.equal(listed.mapIds.length, 6);
  }
});

test('storage of absent keys: undefined, not a throw', (t) => {
  const cg = makeTestCgroup(t);
  const other = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  const map = pm.stats!;
  assert.deepEqual(map.keys(), []);
  assert.equal(map.lookup(0n, 'egress'), undefined);
  assert.equal(map.read(0n, 'ingress'), undefined);
  assert.equal(map.read(2n ** 64n - 1n, 'egress'), undefined);
  assert.equal(map.read(cg.id, 'egress'), undefined); // a real cgroup, nothing attached yet

  pm.attach(cg, ['egress']);
  assert.deepEqual(map.keys(), [{ cgroupId: cg.id, direction: 'egress' }]);
  assert.deepEqual(map.read(cg.id, 'egress'), new BigUint64Array(2 * PODMETER_SLOTS)); // bytes, packets per slot
  assert.equal(map.lookup(cg.id, 'egress')?.length, possibleCpus());
  assert.equal(map.read(cg.id, 'ingress'), undefined); // the other direction is a separate key
  assert.equal(map.read(other.id, 'egress'), undefined);
  assert.equal(cgroupId(cg.path), cg.id);
});

test('readUnits: many cgroups in one call, each as readUnit reads it; an unchanged one gives back its previous sums', async (t) => {
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const idle = makeTestCgroup(t);
  const absent = makeTestCgroup(t); // nothing attached: no entry
  const pm = loadPodmeter(t);
  const map = pm.stats!;
  for (const cg of [sender, receiver, idle]) pm.attach(cg);
  await udpExchange({ senderCgroup: sender, receiverCgroup: receiver, family: 4, count: 20, payload: 100 });
  const ids = [sender.id, receiver.id, idle.id, absent.id];
  const many = map.readUnits(
    ids,
    ids.map(() => undefined),
  );
  assert.deepEqual(
    many,
    ids.map((id) => map.readUnit(id)),
  );
  const half = 2 * PODMETER_SLOTS;
  const total = (sums: BigUint64Array | undefined, from: number) =>
    sums?.subarray(from, from + half).reduce((a, b) => a + b, 0n);
  assert.ok(total(many[0], half)! > 0n && total(many[0], 0) === 0n, 'the sender: egress only');
  assert.ok(total(many[1], 0)! > 0n && total(many[1], half) === 0n, 'the receiver: ingress only');
  assert.equal(total(many[2], 0), 0n);
  assert.equal(many[3], undefined);
  const again = map.readUnits(ids, many);
  ids.forEach((_, i) => assert.equal(again[i], many[i], `cgroup ${i}: unchanged, so the same array (or undefined)`));
  assert.throws(() => map.readUnits([sender.id], []), TypeError, 'one previous per cgroup');
  assert.throws(() => map.readUnits([-1n], [undefined]), RangeError);
});
