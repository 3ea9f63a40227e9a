/**
 * The operator's pod list applied page by page (operator/pods.ts relist, fed
 * by common/kube/reflector.ts): each page's rows become records at once, and
 * only a complete list removes the pods it did not have.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Interner, OwnerIndex } from '../../operator/owners.ts';
import { PodStore, type PodListener, type PodRecord } from '../../operator/pods.ts';
import type { KubeObject } from '../../common/kube/api.ts';

const silent = pino({ level: 'silent' });
const columns = { columnDefinitions: [{ name: 'Name' }, { name: 'Node' }] };
const row = (name: string, node: string, ingress = '0') => ({
  cells: [name, node],
  object: {
    metadata: {
      uid: `uid-${name}`,
      name,
      namespace: 'ns',
      annotations: { 'podmeter.io/ingress-bytes': ingress, 'podmeter.io/egress-bytes': '0' },
    },
  },
});

function store(): { pods: PodStore; events: string[] } {
  const intern = new Interner();
  const pods = new PodStore({ owners: new OwnerIndex(silent, intern), intern, log: silent, onMalformed: () => {} });
  const events: string[] = [];
  const listener: PodListener = {
    added: (p: PodRecord) => events.push(`added ${p.name} on ${p.node}`),
    changed: (p: PodRecord) => events.push(`changed ${p.name}`),
    deleted: (p: PodRecord, final) => events.push(`deleted ${p.name} with ${final.ingressBytes}`),
    assigned: () => {},
  };
  pods.listener = listener;
  return { pods, events };
}

/** A list as the reflector hands it over: the first page carries the columns, later pages none. */
function list(pods: PodStore, pages: ReturnType<typeof row>[][], complete = true): void {
  const relist = pods.relist();
  pages.forEach((rows, i) => relist.page(rows, i === 0 ? columns : { columnDefinitions: null }));
  if (complete) relist.end();
}

test('pod relist: pages apply as they arrive; only a complete list removes the pods it lacked', () => {
  const { pods, events } = store();
  const relist = pods.relist();
  relist.page([row('a', 'node-1'), row('b', 'node-2', '5')] as KubeObject[], columns);
  assert.deepEqual(
    events,
    ['added a on node-1', 'added b on node-2'],
    'records are made from the first page before the list ends',
  );
  relist.page([row('c', 'node-1')] as KubeObject[], { columnDefinitions: null });
  relist.end();
  assert.equal(pods.size, 3);
  assert.equal(pods.get('uid-c')?.node, 'node-1', 'the Node column of the first page is used for later pages');

  // A relist that fails after its first page deletes nothing; the next complete one deletes what is gone.
  events.length = 0;
  list(pods, [[row('a', 'node-1')]], false);
  assert.equal(pods.size, 3);
  list(pods, [[row('a', 'node-1')], [row('c', 'node-1', '9')]]);
  assert.deepEqual(events, ['changed c', 'deleted b with 5']);
  assert.deepEqual([...pods.values()].map((p) => p.name).sort(), ['a', 'c']);
});
