import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isKubepodsRoot, parsePodCgroup, podCgroupOf, type PodCgroup } from '../../agent/cgroups/podPath.ts';

const UID = '8c1f2a3b-1234-4abc-9def-0123456789ab';
const UID_ = UID.replaceAll('-', '_');
const STATIC = '6b7c3a0e0f8d4a1c9e2b5d7f8a9c0b1d';
const CID = 'a'.repeat(32) + '0123456789abcdef0123456789abcdef';

function pod(path: string, qos: PodCgroup['qos'], driver: PodCgroup['driver'], uid = UID): PodCgroup {
  return { kind: 'pod', uid, qos, driver, path };
}

const SYSTEMD_BURSTABLE = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`;
const SYSTEMD_BESTEFFORT = `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`;
const SYSTEMD_GUARANTEED = `kubepods.slice/kubepods-pod${UID_}.slice`;
const KIND_BURSTABLE = `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod${UID_}.slice`;
const KIND_GUARANTEED = `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${UID_}.slice`;

const podLevel: Array<[string, string, PodCgroup]> = [
  ['systemd burstable', SYSTEMD_BURSTABLE, pod(SYSTEMD_BURSTABLE, 'burstable', 'systemd')],
  ['systemd besteffort', SYSTEMD_BESTEFFORT, pod(SYSTEMD_BESTEFFORT, 'besteffort', 'systemd')],
  ['systemd guaranteed', SYSTEMD_GUARANTEED, pod(SYSTEMD_GUARANTEED, 'guaranteed', 'systemd')],
  ['cgroupfs burstable', `kubepods/burstable/pod${UID}`, pod(`kubepods/burstable/pod${UID}`, 'burstable', 'cgroupfs')],
  [
    'cgroupfs besteffort',
    `kubepods/besteffort/pod${UID}`,
    pod(`kubepods/besteffort/pod${UID}`, 'besteffort', 'cgroupfs'),
  ],
  ['cgroupfs guaranteed', `kubepods/pod${UID}`, pod(`kubepods/pod${UID}`, 'guaranteed', 'cgroupfs')],
  ['kind systemd burstable', KIND_BURSTABLE, pod(KIND_BURSTABLE, 'burstable', 'systemd')],
  ['kind systemd guaranteed', KIND_GUARANTEED, pod(KIND_GUARANTEED, 'guaranteed', 'systemd')],
  [
    'kind node container seen from the host',
    `system.slice/docker-${CID}.scope/kubepods/burstable/pod${UID}`,
    pod(`system.slice/docker-${CID}.scope/kubepods/burstable/pod${UID}`, 'burstable', 'cgroupfs'),
  ],
  [
    'kind cgroupfs under /kubelet',
    `kubelet/kubepods/besteffort/pod${UID}`,
    pod(`kubelet/kubepods/besteffort/pod${UID}`, 'besteffort', 'cgroupfs'),
  ],
  [
    'static pod, systemd',
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${STATIC}.slice`,
    pod(
      `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${STATIC}.slice`,
      'burstable',
      'systemd',
      STATIC,
    ),
  ],
  ['static pod, cgroupfs', `kubepods/pod${STATIC}`, pod(`kubepods/pod${STATIC}`, 'guaranteed', 'cgroupfs', STATIC)],
  [
    'upper-case uid is lower cased',
    `kubepods/pod${UID.toUpperCase()}`,
    pod(`kubepods/pod${UID.toUpperCase()}`, 'guaranteed', 'cgroupfs'),
  ],
  ['leading slash is dropped', `/${SYSTEMD_GUARANTEED}`, pod(SYSTEMD_GUARANTEED, 'guaranteed', 'systemd')],
  ['trailing slash is dropped', `${SYSTEMD_GUARANTEED}/`, pod(SYSTEMD_GUARANTEED, 'guaranteed', 'systemd')],
];

const containers: Array<[string, string, PodCgroup]> = [
  [
    'containerd scope',
    `${SYSTEMD_BURSTABLE}/cri-containerd-${CID}.scope`,
    pod(SYSTEMD_BURSTABLE, 'burstable', 'systemd'),
  ],
  ['cri-o scope', `${SYSTEMD_BESTEFFORT}/crio-${CID}.scope`, pod(SYSTEMD_BESTEFFORT, 'besteffort', 'systemd')],
  ['docker scope', `${SYSTEMD_GUARANTEED}/docker-${CID}.scope`, pod(SYSTEMD_GUARANTEED, 'guaranteed', 'systemd')],
  [
    'crun sub-cgroup inside a scope',
    `${SYSTEMD_BURSTABLE}/crio-${CID}.scope/container`,
    pod(SYSTEMD_BURSTABLE, 'burstable', 'systemd'),
  ],
  [
    'cgroupfs container',
    `kubepods/burstable/pod${UID}/${CID}`,
    pod(`kubepods/burstable/pod${UID}`, 'burstable', 'cgroupfs'),
  ],
  ['cgroupfs cri-o container', `kubepods/pod${UID}/crio-${CID}`, pod(`kubepods/pod${UID}`, 'guaranteed', 'cgroupfs')],
  ['kind container', `${KIND_BURSTABLE}/cri-containerd-${CID}.scope`, pod(KIND_BURSTABLE, 'burstable', 'systemd')],
  [
    'kind inside a pod belongs to the outer pod',
    `kubepods/burstable/pod${UID}/${CID}/kubepods/pod${STATIC}`,
    pod(`kubepods/burstable/pod${UID}`, 'burstable', 'cgroupfs'),
  ],
];

const garbage: Array<[string, string]> = [
  ['empty', ''],
  ['only a slash', '/'],
  ['root slice', 'kubepods.slice'],
  ['qos slice', 'kubepods.slice/kubepods-burstable.slice'],
  ['cgroupfs qos', 'kubepods/besteffort'],
  ['system service', 'system.slice/sshd.service'],
  ['user session', 'user.slice/user-1000.slice/session-2.scope'],
  [
    'volume mount unit carrying a uid',
    `system.slice/var-lib-kubelet-pods-${UID}-volumes-kubernetes.io\\x7esecret-token.mount`,
  ],
  ['mount unit under a pod', `${SYSTEMD_BURSTABLE}/foo.mount`],
  ['cri-o conmon scope', `${SYSTEMD_BURSTABLE}/crio-conmon-${CID}.scope`],
  ['unknown child of a pod', `kubepods/pod${UID}/not-a-container`],
  ['container id too short', `${SYSTEMD_BURSTABLE}/cri-containerd-${CID.slice(1)}.scope`],
  ['cgroupfs name for a systemd pod', `kubepods.slice/kubepods-burstable.slice/pod${UID}`],
  ['systemd name for a cgroupfs pod', `kubepods/burstable/kubepods-burstable-pod${UID_}.slice`],
  ['systemd pod directly under the root', `kubepods.slice/kubepods-burstable-pod${UID_}.slice`],
  [
    'qos mismatch between slice and pod',
    `kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod${UID_}.slice`,
  ],
  ['dashed uid in a slice name', `kubepods.slice/kubepods-pod${UID}.slice`],
  ['underscored uid in cgroupfs', `kubepods/pod${UID_}`],
  ['uid one char short', `kubepods/pod${UID.slice(0, -1)}`],
  ['uid with a non-hex char', `kubepods/pod${UID.replace('a', 'g')}`],
  ['uid groups misplaced', `kubepods/pod8c1f2a3b1-234-4abc-9def-0123456789ab`],
  ['static hash 31 chars', `kubepods/pod${STATIC.slice(1)}`],
  ['latin1-decoded bytes', `kubepods/pod${UID.slice(0, -2)}\u00ff\u00fe`],
  ['U+FFFD replacement chars', `kubepods.slice/kubepods-pod${UID_.slice(0, -1)}\ufffd.slice`],
  ['non-UTF-8 root prefix', 'kubel\u00e9t.slice/kubel\u00e9t-kubepods.slice'],
  ['dot-dot', `kubepods/../kubepods/pod${UID}`],
  ['dot', `kubepods/./pod${UID}`],
  ['double slash', `kubepods//pod${UID}`],
  ['NUL byte', `kubepods/pod${UID}\0`],
  ['pod prefix without uid', 'kubepods/pod'],
];

test('parsePodCgroup recognises pod-level cgroups of every driver and root', async (t) => {
  for (const [name, path, expected] of podLevel) {
    await t.test(name, () => assert.deepEqual(parsePodCgroup(path), expected));
  }
});

test('parsePodCgroup rejects container scopes below a pod', async (t) => {
  for (const [name, path] of containers) {
    await t.test(name, () => assert.equal(parsePodCgroup(path), undefined));
  }
});

test('parsePodCgroup and podCgroupOf return undefined for garbage', async (t) => {
  for (const [name, path] of garbage) {
    await t.test(name, () => {
      assert.equal(parsePodCgroup(path), undefined);
      assert.equal(podCgroupOf(path), undefined);
    });
  }
});

test('podCgroupOf maps a pod and its containers to the pod', async (t) => {
  for (const [name, path, expected] of [...podLevel, ...containers]) {
    await t.test(name, () => assert.deepEqual(podCgroupOf(path), expected));
  }
});

test('isKubepodsRoot', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['kubepods.slice', true],
    ['kubepods', true],
    ['/kubepods.slice/', true],
    ['kubelet.slice/kubelet-kubepods.slice', true],
    ['kubelet/kubepods', true],
    [`system.slice/docker-${CID}.scope/kubepods`, true],
    ['kubepods.slice/kubepods-burstable.slice', false],
    ['kubepods/burstable', false],
    ['kubelet.slice', false],
    ['system.slice', false],
    ['kubepods.mount', false],
    [`kubepods/burstable/pod${UID}/${CID}/kubepods`, false],
    ['', false],
    ['..', false],
    ['kubel\ufffd-kubepods.slice', false],
  ];
  for (const [path, expected] of cases) {
    await t.test(JSON.stringify(path), () => assert.equal(isKubepodsRoot(path), expected));
  }
});
