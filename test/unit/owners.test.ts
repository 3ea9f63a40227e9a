/** Owner chains: which workload a pod is counted under (operator/owners.ts), without a cluster. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Interner, OwnerIndex } from '../../operator/owners.ts';

const silent = pino({ level: 'silent' });
const meta = (name: string, owner?: [string, string]) => ({
  metadata: {
    name,
    namespace: 'ns',
    ...(owner ? { ownerReferences: [{ kind: owner[0], name: owner[1], controller: true }] } : {}),
  },
});

test('owner chains: Deployment, CronJob, bare, missing, cycle, mirror pod', () => {
  const owners = new OwnerIndex(silent, new Interner());
  owners.put('ReplicaSet', meta('web-1', ['Deployment', 'web']));
  owners.put('Job', meta('nightly-1', ['CronJob', 'nightly']));
  owners.put('Job', meta('once'));
  owners.put('ReplicaSet', meta('a', ['ReplicaSet', 'b']));
  owners.put('ReplicaSet', meta('b', ['ReplicaSet', 'a']));
  const r = (kind: string | null, name = '') => owners.resolve('ns', 'pod-x', kind === null ? null : { kind, name });
  assert.equal(r('ReplicaSet', 'web-1').workload.key, 'ns/Deployment/web');
  assert.equal(r('Job', 'nightly-1').workload.key, 'ns/CronJob/nightly');
  assert.equal(r('Job', 'once').workload.key, 'ns/Job/once');
  assert.equal(r('StatefulSet', 'db').workload.key, 'ns/StatefulSet/db');
  assert.equal(r(null).workload.key, 'ns/Pod/pod-x');
  assert.equal(r('Node', 'node-1').workload.key, 'ns/Pod/pod-x', "a static pod's mirror is its own workload");
  const missing = r('ReplicaSet', 'gone');
  assert.deepEqual([missing.workload.key, missing.missing], ['ns/ReplicaSet/gone', true]);
  const cycle = r('ReplicaSet', 'a');
  assert.deepEqual([cycle.workload.key, cycle.missing], ['ns/ReplicaSet/a', false]);
  owners.remove('ReplicaSet', meta('web-1'));
  assert.equal(r('ReplicaSet', 'web-1').missing, true);
});

test('owner references longer than the usage objects hold are fitted where they are read', () => {
  const owners = new OwnerIndex(silent, new Interner());
  const long = (end: string) => ({
    metadata: {
      name: 'p',
      namespace: 'ns',
      ownerReferences: [{ kind: `${'Kind'.repeat(30)}${end}`, name: `${'n'.repeat(1000)}${end}`, controller: true }],
    },
  });
  const a = owners.resolve('ns', 'p', owners.controllerOf(long('a').metadata.ownerReferences)).workload;
  const b = owners.resolve('ns', 'p', owners.controllerOf(long('b').metadata.ownerReferences)).workload;
  assert.ok(a.kind.length <= 63 && a.name.length <= 253, a.key);
  assert.notEqual(a.key, b.key);
  assert.equal(
    owners.resolve('ns', 'p', owners.controllerOf(long('a').metadata.ownerReferences)).workload,
    a,
    'the same owner is the same workload',
  );
});

test('cached workloads go once unused for two generations (memory comes back down after churn); a used one stays', () => {
  const owners = new OwnerIndex(silent, new Interner());
  const GENERATION = 2 * 60_000; // operator/owners.ts GENERATION_MS
  const at = Date.now();
  const used = owners.workload('ns', 'Job', 'used');
  const unused = owners.workload('ns', 'Job', 'unused');
  owners.age(at + GENERATION);
  assert.equal(owners.workload('ns', 'Job', 'used'), used, 'found in the previous generation: kept');
  owners.age(at + 2 * GENERATION);
  assert.equal(owners.workload('ns', 'Job', 'used'), used, 'used in every generation: kept');
  owners.age(at + 3 * GENERATION);
  const again = owners.workload('ns', 'Job', 'unused');
  assert.notEqual(again, unused, 'unused for two generations: let go (a new object)');
  assert.equal(again.key, unused.key);
  owners.age(at + 3 * GENERATION + 1);
  assert.equal(owners.workload('ns', 'Job', 'unused'), again, 'no new generation before its time');
});
