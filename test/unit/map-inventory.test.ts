/**
 * The pure parts of the map inventory: kernel version rule, cgroup path
 * translation, the storage estimate, the /proc scan on a fake /proc with
 * entries that vanish, the summaries, the page's escaping and script, the
 * CLI rendering.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Script } from 'node:vm';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CGROUP_STORAGE_ELEMENT_OVERHEAD,
  cgroupStorageElementBytes,
  estimateStorageBytes,
  kernelChargesMemlock,
  memlockIsExact,
} from '../../agent/maps/estimate.ts';
import { cgroupTranslator } from '../../agent/cgroups/translate.ts';
import { cgroupV2Path, scanMapHolders } from '../../agent/maps/holders.ts';
import type { InventoryMap, MapInventory } from '../../agent/maps/inventory.ts';
import { podMapBytes, summarise } from '../../agent/maps/summary.ts';
import { CHART_JS, mapsPage } from '../../agent/maps/page.ts';
import { mapsView } from '../../agent/maps/routes.ts';
import { renderMaps } from '../../cli/maps.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';

test('memlock is exact from kernel 6.4 on', () => {
  assert.equal(memlockIsExact('6.18.44-fc-v509'), true);
  assert.equal(memlockIsExact('6.4.0'), true);
  assert.equal(memlockIsExact('7.0.1'), true);
  assert.equal(memlockIsExact('6.3.13-generic'), false);
  assert.equal(memlockIsExact('5.15.0-105-generic'), false);
  assert.equal(memlockIsExact('garbage'), false);
});

test('cgroup storage elements are in memlock before kernel 5.11', () => {
  assert.equal(kernelChargesMemlock('5.10.0-32-amd64'), true);
  assert.equal(kernelChargesMemlock('4.19.0'), true);
  assert.equal(kernelChargesMemlock('5.11.0'), false);
  assert.equal(kernelChargesMemlock('6.1.0-50-amd64'), false);
});

test('the unified line of /proc/<pid>/cgroup', () => {
  assert.equal(cgroupV2Path('12:memory:/x\n1:name=systemd:/\n0::/kubepods.slice/a.slice\n'), '/kubepods.slice/a.slice');
  assert.equal(cgroupV2Path('0::/\n'), '/');
  assert.equal(cgroupV2Path('4:memory:/x\n'), undefined);
});

test('cgroup paths are translated relative to the cgroup root, through the mount', () => {
  const mountinfo = [
    '30 23 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro',
    '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw',
  ].join('\n');
  const atMount = cgroupTranslator('/sys/fs/cgroup/unified', mountinfo);
  assert.equal(atMount('/kubepods.slice/p.slice'), 'kubepods.slice/p.slice');
  assert.equal(atMount('/'), '');
  const below = cgroupTranslator('/sys/fs/cgroup/unified/podmeter-test-x/', mountinfo);
  assert.equal(below('/podmeter-test-x/kubepods.slice/p.slice'), 'kubepods.slice/p.slice');
  assert.equal(below('/system.slice/x.service'), '/system.slice/x.service', 'outside the root: kept as /proc has it');
  assert.equal(below('/podmeter-test-xy/a'), '/podmeter-test-xy/a', 'a sibling with a longer name is outside too');
  // A container that sees a sub-tree mounted as its cgroup2 root (mount root /kubelet).
  const nested = cgroupTranslator('/sys/fs/cgroup', '50 1 0:40 /kubelet /sys/fs/cgroup rw - cgroup2 cgroup2 rw');
  assert.equal(nested('/kubelet/kubepods/pod1'), 'kubepods/pod1');
  assert.equal(nested('/other'), '/other');
  // No mountinfo: the root is taken as the hierarchy's root.
  assert.equal(cgroupTranslator('/sys/fs/cgroup', undefined)('/a/b'), 'a/b');
});

test('inside a private cgroup namespace, paths that climb above it are rebased on the namespace root', () => {
  // As in a container: its own cgroup2 mount (root /) and the host tree the chart mounts (root climbing 4 levels).
  const mountinfo = [
    '900 880 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw',
    '905 880 0:30 /../../../.. /host/sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw',
  ].join('\n');
  const nsRoot = [
    'kubepods.slice',
    'kubepods-burstable.slice',
    'kubepods-burstable-podA.slice',
    'cri-containerd-a.scope',
  ];
  const translate = cgroupTranslator('/host/sys/fs/cgroup', mountinfo, nsRoot);
  assert.equal(
    translate('/../../../kubepods-besteffort.slice/kubepods-besteffort-podB.slice/cri-containerd-b.scope'),
    'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podB.slice/cri-containerd-b.scope',
  );
  assert.equal(translate('/'), nsRoot.join('/'), 'the agent itself');
  assert.equal(
    translate('/../cri-containerd-pause.scope'),
    'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podA.slice/cri-containerd-pause.scope',
  );
  assert.equal(translate('/../../../../../x'), '/../../../../../x', 'above the host mount: kept as /proc has it');
  // Without the namespace root the climbing paths stay unplaced (the old behaviour).
  assert.equal(
    cgroupTranslator('/host/sys/fs/cgroup', mountinfo)('/../../../kubepods-besteffort.slice'),
    '/../../../kubepods-besteffort.slice',
  );
});

test('the cgroup storage estimate: entries x (round_up(value, 8) x CPUs + overhead) + memlock', () => {
  assert.equal(CGROUP_STORAGE_ELEMENT_OVERHEAD, 128);
  const map = { type: 'percpu_cgroup_storage', valueSize: 16, memlock: 328 };
  assert.equal(cgroupStorageElementBytes(map, 4), 16 * 4 + 128);
  assert.equal(estimateStorageBytes(map, 0, 4), 328);
  assert.equal(estimateStorageBytes(map, 10, 4), 328 + 10 * (64 + 128));
  assert.equal(
    cgroupStorageElementBytes({ type: 'percpu_cgroup_storage', valueSize: 12 }, 2),
    16 * 2 + 128,
    'value rounded up to 8',
  );
  assert.equal(
    cgroupStorageElementBytes({ type: 'cgroup_storage', valueSize: 12 }, 64),
    32 + 128,
    'shared storage: one buffer (16-byte header + value)',
  );
  assert.equal(estimateStorageBytes({ ...map, memlock: -1 }, 1, 1), 16 + 128, 'no memlock reported: elements only');
});

test('the /proc scan skips what vanished or is unreadable, and reads fdinfo only for bpf-map fds', async (t) => {
  const proc = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(proc, { recursive: true, force: true }));
  const pid = (n: number, fds: Record<string, { link: string; info?: string }>) => {
    mkdirSync(join(proc, String(n), 'fd'), { recursive: true });
    mkdirSync(join(proc, String(n), 'fdinfo'), { recursive: true });
    for (const [fd, { link, info }] of Object.entries(fds)) {
      symlinkSync(link, join(proc, String(n), 'fd', fd));
      if (info !== undefined) writeFileSync(join(proc, String(n), 'fdinfo', fd), info);
    }
  };
  const mapInfo = (id: number) =>
    `pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t4096\nmap_id:\t${id}\nfrozen:\t0\n`;
  pid(10, {
    '0': { link: '/dev/null' },
    '3': { link: 'anon_inode:bpf-map', info: mapInfo(7) },
    '4': { link: 'anon_inode:bpf-map', info: mapInfo(7) },
    '5': { link: 'anon_inode:bpf-prog', info: 'prog_id:\t9\n' },
  });
  pid(11, { '3': { link: 'anon_inode:bpf-map' } }); // fd closed before its fdinfo was read
  pid(12, { '3': { link: 'anon_inode:bpf-map', info: 'pos:\t0\n' } }); // no map_id line
  pid(13, {
    '6': { link: 'anon_inode:bpf-map', info: mapInfo(8) },
    '7': { link: 'anon_inode:bpf-map', info: mapInfo(9) },
  });
  mkdirSync(join(proc, '14')); // exited: no fd directory any more
  mkdirSync(join(proc, 'self'));
  writeFileSync(join(proc, 'uptime'), '1 1\n');

  const holders = (await scanMapHolders(proc)).map((h) => ({ pid: h.pid, mapIds: [...h.mapIds].sort() }));
  assert.deepEqual(
    holders.sort((a, b) => a.pid - b.pid),
    [
      { pid: 10, mapIds: [7] },
      { pid: 13, mapIds: [8, 9] },
    ],
  );
  await assert.rejects(scanMapHolders(join(proc, 'missing')), /cannot list/);

  // The fds one process names as not maps (the agent's links) are passed over: not even readlink'd.
  const asked: number[] = [];
  const skipping = await scanMapHolders(proc, undefined, {
    pid: 13,
    fds: () => (asked.push(13), new Set([6])),
  });
  assert.deepEqual(asked, [13], 'asked once, when the scan reaches that pid');
  assert.deepEqual(
    skipping.map((h) => ({ pid: h.pid, mapIds: [...h.mapIds].sort() })).sort((a, b) => a.pid - b.pid),
    [
      { pid: 10, mapIds: [7] },
      { pid: 13, mapIds: [9] },
    ],
  );
});

function fakeMap(
  id: number,
  name: string,
  bytes: number,
  processes: InventoryMap['processes'],
  owner: InventoryMap['owner'] = 'process',
): InventoryMap {
  const podUids = [...new Set(processes.flatMap((p) => (p.podUid ? [p.podUid] : [])))].sort();
  return {
    id,
    name,
    type: 'hash',
    keySize: 4,
    valueSize: 8,
    maxEntries: 1,
    flags: 0,
    memlock: bytes,
    bytes,
    estimated: false,
    owner,
    owners: owner === 'process' ? [...new Set(processes.map((p) => p.comm))].sort() : [owner],
    processes,
    podUids,
    programIds: [],
  };
}

test('summaries: by name once per map; by owner and by pod in full for each sharer', () => {
  const maps = [
    fakeMap(1, 'shared', 1000, [
      { pid: 100, comm: 'agent', podUid: 'pod-a' },
      { pid: 200, comm: 'bpftool', podUid: 'pod-b' },
      { pid: 101, comm: 'agent', podUid: 'pod-a' },
    ]),
    fakeMap(2, 'shared', 10, [{ pid: 100, comm: 'agent', podUid: 'pod-a' }]),
    fakeMap(3, 'lonely', 5, [], 'pinned'),
    fakeMap(4, 'prog', 7, [], 'program'),
  ];
  const s = summarise(maps);
  assert.deepEqual(s.byName, [
    { name: 'shared', types: ['hash'], maps: 2, bytes: 1010 },
    { name: 'prog', types: ['hash'], maps: 1, bytes: 7 },
    { name: 'lonely', types: ['hash'], maps: 1, bytes: 5 },
  ]);
  assert.deepEqual(s.byOwner, [
    { owner: 'agent', kind: 'process', pids: [100, 101], maps: 2, bytes: 1010 },
    { owner: 'bpftool', kind: 'process', pids: [200], maps: 1, bytes: 1000 },
    { owner: 'program', kind: 'program', pids: [], maps: 1, bytes: 7 },
    { owner: 'pinned', kind: 'pinned', pids: [], maps: 1, bytes: 5 },
  ]);
  assert.deepEqual(s.byPod, [
    { uid: 'pod-a', pids: [100, 101], maps: 2, bytes: 1010 },
    { uid: 'pod-b', pids: [200], maps: 1, bytes: 1000 },
  ]);
  const inv = fakeInventory(maps);
  assert.equal(inv.totalBytes, 1022, 'the node total: each map once');
  assert.equal(podMapBytes(inv, 'pod-a'), 1010);
  assert.equal(podMapBytes(inv, 'pod-b'), 1000);
  assert.equal(podMapBytes(inv, 'pod-c'), undefined);
  assert.equal(podMapBytes(undefined, 'pod-a'), undefined);
});

function fakeInventory(maps: InventoryMap[]): MapInventory {
  return {
    takenAt: Date.UTC(2025, 0, 2, 3, 4, 5),
    durationMs: 1,
    longestSliceMs: 1,
    kernel: '6.1.0-test',
    memlockExact: false,
    possibleCpus: 2,
    cgroupRoot: '/sys/fs/cgroup',
    totalBytes: maps.reduce((s, m) => s + m.bytes, 0),
    mapCount: maps.length,
    maps,
    unreadableMaps: [],
    processes: [],
    ...summarise(maps),
  };
}

test('the page escapes untrusted names and its script parses', () => {
  const evil = '</script><img src=x onerror=alert(1)>';
  const html = mapsPage(mapsView(fakeInventory([fakeMap(1, 'm', 10, [{ pid: 1, comm: evil }])])));
  assert.ok(!html.includes(evil), 'a comm cannot close the data script element');
  assert.equal((html.match(/<\/script>/g) ?? []).length, 2, "only the page's own two script elements close");
  const data = /<script id="podmeter-maps" type="application\/json">(.*)<\/script>/.exec(html)?.[1];
  assert.equal(
    (JSON.parse(data ?? '') as MapInventory).maps[0]?.owners[0],
    evil,
    'the JSON still carries the exact name',
  );
  assert.doesNotThrow(() => new Script(CHART_JS, { filename: 'chart.js' }));
  assert.ok(!/https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(CHART_JS + html), 'no outside URL but the SVG namespace');
});

test('mapsView adds pod names where the namer knows them', () => {
  const inv = fakeInventory([
    fakeMap(1, 'm', 10, [{ pid: 1, comm: 'c', podUid: 'u1' }]),
    fakeMap(2, 'n', 5, [{ pid: 2, comm: 'd', podUid: 'u2' }]),
  ]);
  inv.processes = [{ pid: 1, comm: 'c', podUid: 'u1', mapIds: [1], bytes: 10, cgroup: 'x' }];
  const view = mapsView(inv, (uid) => (uid === 'u1' ? { namespace: 'ns', pod: 'p' } : undefined));
  assert.equal(view.time, '2025-01-02T03:04:05.000Z');
  assert.deepEqual(
    view.byPod.map((p) => [p.uid, p.namespace, p.pod]),
    [
      ['u1', 'ns', 'p'],
      ['u2', undefined, undefined],
    ],
  );
  assert.equal(view.processes[0]?.pod, 'p');
});

test('CLI rendering: the four views, limits, the memlock caveat', () => {
  const maps = Array.from({ length: 5 }, (_, i) =>
    fakeMap(i + 1, `map${i}`, 1024 * (i + 1), [{ pid: 10 + i, comm: `proc${i}`, podUid: 'u1' }]),
  );
  const view = mapsView(fakeInventory(maps), (uid) => (uid === 'u1' ? { namespace: 'ns', pod: 'web' } : undefined));
  const out = renderMaps(view, 2);
  assert.match(out, /^BPF map memory: 15\.0 KiB in 5 maps \(each map once\)$/m);
  assert.match(out, /memlock is from the map shape, not exact \(kernel before 6\.4\)/);
  assert.match(
    out,
    /By map name[^\n]*\n\s+NAME\s+TYPE\s+MAPS\s+MEMORY\n\s+map4\s+hash\s+1\s+5\.00 KiB\n\s+map3 .*\n\s+\.\.\. 3 more/,
  );
  assert.match(out, /ns\/web\s+u1\s+5\s+15\.0 KiB/);
  assert.match(out, /proc4\s+14\s+1\s+5\.00 KiB/);
  assert.ok(!renderMaps(view, 0).includes('more'), '-n 0 shows all');
});
