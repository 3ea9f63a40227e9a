/**
 * The sweep's orphan NodeRetirements deletion (operator/ledger/spills.ts
 * deleteOrphanSpills), over a fake API that lists objects and records
 * deletes: an object its NodeUsage lists is kept; an unlisted one is
 * deleted once older than a write on its way could be (10 minutes), also
 * when its node has no NodeUsage any more; a younger one is kept; a change
 * of leadership while the list was read deletes nothing; a delete that fails is
 * counted and left to the next sweep.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { KubeApi } from '../../common/kube/api.ts';
import type { WriteBudget } from '../../common/writeBudget.ts';
import type { SpillObject } from '../../common/contract/usage.ts';
import { Book } from '../../operator/ledger/book.ts';
import { deleteOrphanSpills } from '../../operator/ledger/spills.ts';
import type { PodStore } from '../../operator/pods.ts';

const NOW = Date.parse('2026-12-07T12:00:00Z');
const MIN = 60_000;

function spill(name: string, node: string, ageMs: number): SpillObject {
  return {
    apiVersion: 'podmeter.io/v1alpha1',
    kind: 'NodeRetirements',
    metadata: { name, creationTimestamp: new Date(NOW - ageMs).toISOString() },
    spec: { node, retiring: [] },
  } as unknown as SpillObject;
}

function fakeApi(objects: SpillObject[], options: { failDelete?: string; onList?: () => void } = {}) {
  const deleted: string[] = [];
  const api = {
    get(path: string) {
      assert.match(path, /\/noderetirements$/);
      options.onList?.();
      return Promise.resolve({ items: objects, metadata: {} });
    },
    request(method: string, path: string) {
      assert.equal(method, 'DELETE');
      const name = path.split('/').pop()!;
      if (name === options.failDelete) return Promise.reject(Object.assign(new Error('boom'), { status: 500 }));
      deleted.push(name);
      return Promise.resolve({});
    },
  };
  return { api: api as unknown as KubeApi, deleted };
}

function makeBook(api: KubeApi) {
  const errors: string[] = [];
  const book = new Book({
    api,
    pods: {} as PodStore,
    identity: 'podmeter-test-operator',
    log: pino({ level: 'silent' }),
    budget: {} as WriteBudget,
    onError: (op) => errors.push(op),
  });
  // node-a's NodeUsage lists one object; node-b has none (its NodeUsage went with its retention).
  book.entry('NodeUsage', 'node-a').spills.set('node-a.spill-listed', new Set());
  return { book, errors };
}

test('orphan NodeRetirements: listed kept, unlisted deleted once 10 minutes old (also of a node gone), younger kept', async () => {
  const objects = [
    spill('node-a.spill-listed', 'node-a', 60 * MIN),
    spill('node-a.spill-orphan', 'node-a', 11 * MIN),
    spill('node-a.spill-young', 'node-a', 9 * MIN),
    spill('node-b.spill-orphan', 'node-b', 30 * MIN),
  ];
  const { api, deleted } = fakeApi(objects);
  const { book, errors } = makeBook(api);
  assert.equal(await deleteOrphanSpills(book, NOW), 2);
  assert.deepEqual(deleted, ['node-a.spill-orphan', 'node-b.spill-orphan']);
  assert.deepEqual(errors, []);
});

test('orphan NodeRetirements: nothing deleted when leadership changed during the list; a failed delete is counted and left to the next sweep', async () => {
  let book!: Book;
  const reloaded = fakeApi([spill('node-a.spill-orphan', 'node-a', 11 * MIN)], {
    onList: () => book.generation++, // leadership changed while the list was read
  });
  book = makeBook(reloaded.api).book;
  assert.equal(await deleteOrphanSpills(book, NOW), 0);
  assert.deepEqual(reloaded.deleted, []);

  const failing = fakeApi([spill('node-a.spill-a', 'node-a', 11 * MIN), spill('node-a.spill-b', 'node-a', 11 * MIN)], {
    failDelete: 'node-a.spill-a',
  });
  const { book: second, errors } = makeBook(failing.api);
  await deleteOrphanSpills(second, NOW);
  assert.deepEqual(failing.deleted, ['node-a.spill-b']);
  assert.deepEqual(errors, ['delete_usage']);
});
