/**
 * One map the agent may not open (GET_FD_BY_ID refused with EPERM, as an LSM
 * refuses it) is left out of the inventory; the walk goes on past it
 * (issue 23). Before, the first refusal failed the whole inventory. The walk
 * here is a stand-in with the native walk's contract (ids above `afterId`,
 * at most `limit`, a thrown SystemError-like error at the first object it
 * cannot open); the real one is exercised by test/kernel/bpf-inventory.
 * Imports inventory.ts, which loads the native addon (built by make build).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { listSliced, type UnreadableObject } from '../../agent/maps/walk.ts';
import { Slices } from '../../agent/maps/slices.ts';

/** The native walk over `ids`, refusing those in `refused` with `code`. */
function walk(ids: number[], refused: Set<number>, code = 'EPERM') {
  let calls = 0;
  const list = (afterId: number, limit: number): { id: number }[] => {
    calls++;
    const out: { id: number }[] = [];
    for (const id of ids) {
      if (id <= afterId) continue;
      if (refused.has(id))
        throw Object.assign(new Error(`list BPF maps: bpf(BPF_*_GET_FD_BY_ID): ${code}`), {
          code,
          syscall: 'bpf(BPF_*_GET_FD_BY_ID)',
        });
      out.push({ id });
      if (limit !== 0 && out.length >= limit) break;
    }
    return out;
  };
  return { list, calls: () => calls };
}

test('an unreadable map is stepped over; every readable one is listed', async () => {
  const ids = [3, 4, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 40, 41, 1000, 70000];
  for (const bad of [[3], [12], [20], [70000], [41, 70000], [3, 4]]) {
    const { list, calls } = walk(ids, new Set(bad));
    const unreadable: UnreadableObject[] = [];
    const got = await listSliced(list, new Slices(1000), unreadable);
    assert.deepEqual(
      got.map((o) => o.id),
      ids.filter((id) => !bad.includes(id)),
      `refused ${bad.join(',')}`,
    );
    // Unreadable objects next to each other (no id between) are stepped over as one: the last is named.
    const named = bad.filter((id) => !bad.includes(ids[ids.indexOf(id) + 1]!));
    assert.deepEqual(
      unreadable,
      named.map((id) => ({ id, code: 'EPERM' })),
    );
    assert.ok(calls() < 120, `${calls()} calls`);
  }
});

test('other errors still fail the walk (a missing capability is not one map)', async () => {
  const list = () => {
    throw Object.assign(new Error('bpf(BPF_MAP_GET_NEXT_ID): EINVAL'), { code: 'EINVAL' });
  };
  await assert.rejects(listSliced(list, new Slices(1000), []), /EINVAL/);
});

test('the walk itself refused (GET_NEXT_ID: no CAP_SYS_ADMIN) fails the inventory with EPERM, not one map left out', async () => {
  let calls = 0;
  const list = () => {
    calls++;
    throw Object.assign(new Error('list BPF maps: bpf(BPF_*_GET_NEXT_ID): EPERM'), {
      code: 'EPERM',
      syscall: 'bpf(BPF_*_GET_NEXT_ID)',
    });
  };
  await assert.rejects(listSliced(list, new Slices(1000), []), { code: 'EPERM' });
  assert.equal(calls, 1);
});
