/**
 * Which Pod a pod cgroup's uid names (agent/kube/pods.ts PodIndex): the Pod
 * of that uid, or the one mirror pod of this node claiming that static pod
 * config hash. Claims a tenant can forge name nothing, and each refused
 * claim is reported once per pod.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { configHashClaim, PodIndex, type ClaimRejection } from '../../agent/kube/pods.ts';
import type { KubeObject } from '../../common/kube/api.ts';

const NODE = 'node-a';
const HASH = '0123456789abcdef0123456789abcdef';
const VICTIM = '11111111-2222-4333-8444-555555555555';

function pod(name: string, uid: string, annotations?: Record<string, string>, ownerNode?: string): KubeObject {
  const ownerReferences =
    ownerNode === undefined
      ? undefined
      : [{ apiVersion: 'v1', kind: 'Node', name: ownerNode, uid: 'node-uid', controller: true }];
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid,
      ...(annotations ? { annotations } : {}),
      ...(ownerReferences ? { ownerReferences } : {}),
    },
  };
}
const mirror = (name: string, uid: string, hash = HASH, node = NODE) =>
  pod(name, uid, { 'kubernetes.io/config.mirror': hash, 'kubernetes.io/config.hash': hash }, node);

function index(): { pods: PodIndex; rejected: ClaimRejection[]; lines: Record<string, unknown>[] } {
  const rejected: ClaimRejection[] = [];
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { pods: new PodIndex({ nodeName: NODE, log, onRejectedClaim: (r) => rejected.push(r) }), rejected, lines };
}

test('configHashClaim: only a mirror pod controlled by this Node, only 32 lowercase hex digits', () => {
  assert.deepEqual(configHashClaim(mirror('m', 'u').metadata!, NODE), { hash: HASH });
  assert.equal(configHashClaim(pod('p', 'u').metadata!, NODE), undefined);
  assert.deepEqual(configHashClaim(pod('p', 'u', { 'kubernetes.io/config.hash': HASH }).metadata!, NODE), {
    rejected: 'not_mirror',
  });
  assert.deepEqual(
    configHashClaim(pod('p', 'u', { 'kubernetes.io/config.hash': HASH }, NODE).metadata!, NODE),
    { rejected: 'not_mirror' },
    'no mirror annotation',
  );
  assert.deepEqual(
    configHashClaim(
      pod('p', 'u', { 'kubernetes.io/config.hash': HASH, 'kubernetes.io/config.mirror': HASH }).metadata!,
      NODE,
    ),
    { rejected: 'not_mirror' },
    'no Node owner',
  );
  assert.deepEqual(
    configHashClaim(mirror('m', 'u', HASH, 'node-b').metadata!, NODE),
    { rejected: 'not_mirror' },
    "another node's",
  );
  const notController = mirror('m', 'u');
  notController.metadata!.ownerReferences![0]!.controller = false;
  assert.deepEqual(configHashClaim(notController.metadata!, NODE), { rejected: 'not_mirror' });
  for (const bad of [VICTIM, HASH.toUpperCase(), `${HASH}0`, HASH.slice(1), ` ${HASH.slice(1)}`, '', 'g'.repeat(32)]) {
    assert.deepEqual(
      configHashClaim(mirror('m', 'u', bad).metadata!, NODE),
      { rejected: 'malformed' },
      JSON.stringify(bad),
    );
  }
});

test('PodIndex: a forged claim takes nothing over; a mirror pod names its static pod cgroup', () => {
  const { pods, rejected, lines } = index();
  pods.sync([
    pod('victim', VICTIM),
    pod('thief', 'aaaaaaaa-2222-4333-8444-555555555555', { 'kubernetes.io/config.hash': VICTIM }),
    pod('thief2', 'bbbbbbbb-2222-4333-8444-555555555555', { 'kubernetes.io/config.hash': HASH }),
  ]);
  assert.equal(pods.byCgroupUid(VICTIM)?.name, 'victim');
  assert.equal(pods.byCgroupUid(HASH), undefined, 'a non-mirror pod names no static pod cgroup');
  // The victim's uid is claimed by a "mirror" pod too: its own uid wins (and the value is not a hash).
  pods.put(mirror('thief3', 'cccccccc-2222-4333-8444-555555555555', VICTIM));
  assert.equal(pods.byCgroupUid(VICTIM)?.name, 'victim');
  assert.deepEqual(rejected.sort(), ['malformed', 'not_mirror', 'not_mirror']);
  // Relists and updates of the same pods report nothing again.
  pods.sync([
    pod('victim', VICTIM),
    pod('thief', 'aaaaaaaa-2222-4333-8444-555555555555', { 'kubernetes.io/config.hash': VICTIM, other: 'x' }),
  ]);
  assert.equal(rejected.length, 3);
  assert.deepEqual(lines.map((l) => l.pod).sort(), ['thief', 'thief2', 'thief3']);

  pods.put(mirror('kube-proxy-node-a', 'dddddddd-2222-4333-8444-555555555555'));
  assert.equal(pods.byCgroupUid(HASH)?.name, 'kube-proxy-node-a');
});

test('PodIndex: a hash two mirror pods claim names neither; the one left names it again', () => {
  const { pods, rejected, lines } = index();
  const first = mirror('static-a', 'dddddddd-2222-4333-8444-555555555555');
  pods.put(first);
  pods.put(mirror('static-b', 'eeeeeeee-2222-4333-8444-555555555555'));
  assert.equal(pods.byCgroupUid(HASH), undefined);
  assert.deepEqual(rejected, ['contested']);
  assert.deepEqual(lines[0]!.alsoClaimedBy, ['ns/static-a']);
  pods.delete(first);
  assert.equal(pods.byCgroupUid(HASH)?.name, 'static-b');
  assert.equal(
    pods.lastKnown('dddddddd-2222-4333-8444-555555555555')?.name,
    'static-a',
    'deleted: still known by its uid',
  );
});

test('PodIndex: a claim dropped by an update or a deletion', () => {
  const { pods } = index();
  const uid = 'dddddddd-2222-4333-8444-555555555555';
  pods.put(mirror('static', uid));
  assert.equal(pods.byCgroupUid(HASH)?.name, 'static');
  pods.put(pod('static', uid, { 'kubernetes.io/config.hash': HASH })); // the mirror annotation removed
  assert.equal(pods.byCgroupUid(HASH), undefined);
  assert.equal(pods.lastKnown(HASH), undefined, 'an unclaimed hash is not a departed pod');
  pods.put(mirror('static', uid));
  pods.sync([]); // deleted while the watch was away
  assert.equal(pods.byCgroupUid(HASH), undefined);
  assert.equal(pods.lastKnown(HASH)?.name, 'static', 'its final is still named');
});
