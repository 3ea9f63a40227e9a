import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CgroupMountError,
  findCgroup2Root,
  isCgroup2,
  parseCgroup2Mounts,
  parseMountinfo,
  rankCgroup2Mounts,
} from '../../agent/cgroups/mount.ts';

// Real-looking /proc/self/mountinfo samples, trimmed to the lines that matter plus some noise.

const PURE_V2_HOST = `\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 22 0:24 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700
28 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
`;

// Like this machine: tmpfs at /sys/fs/cgroup, v1 controllers below it, cgroup2 at unified.
const HYBRID_HOST = `\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

const V1_ONLY_HOST = `\
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 24 0:26 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
`;

// A DaemonSet container: its own namespaced cgroup2 at /sys/fs/cgroup, the host's
// mounted at /host/sys/fs/cgroup (root outside its cgroup namespace), and a path with a space.
const CONTAINER_WITH_HOST_MOUNT = `\
1510 1500 0:390 / / rw,relatime master:600 - overlay overlay rw,lowerdir=/var/lib/containerd/l1,upperdir=/u,workdir=/w
1515 1510 0:393 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1516 1515 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup ro,nsdelegate
1530 1510 0:28 /../../.. /host/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime master:9 - cgroup2 cgroup2 rw,nsdelegate
1531 1510 0:28 /../../.. /mnt/my\\040cgroup\\011tab\\134x rw,relatime master:9 - cgroup2 cgroup2 rw
1532 1510 0:30 / /sys/fs/bpf rw,relatime master:11 - bpf bpf rw,mode=700
`;

test('parseCgroup2Mounts finds every cgroup2 mount point', async (t) => {
  const cases: Array<[string, string, string[]]> = [
    ['pure v2 host', PURE_V2_HOST, ['/sys/fs/cgroup']],
    ['hybrid host', HYBRID_HOST, ['/sys/fs/cgroup/unified']],
    ['v1-only host', V1_ONLY_HOST, []],
    [
      'container with host mount',
      CONTAINER_WITH_HOST_MOUNT,
      ['/sys/fs/cgroup', '/host/sys/fs/cgroup', '/mnt/my cgroup\ttab\\x'],
    ],
    ['empty text', '', []],
    ['truncated lines are skipped', '25 22 0:22 / /sys/fs/cgroup rw\n\n41 31 0:38 / /x rw -\n41 31', []],
    ['the same mount point twice is listed once', `${PURE_V2_HOST}${PURE_V2_HOST}`, ['/sys/fs/cgroup']],
    ['no optional fields', '41 31 0:38 / /cg rw - cgroup2 none rw\n', ['/cg']],
    ['several optional fields', '41 31 0:38 / /cg rw shared:1 master:2 propagate_from:3 - cgroup2 none rw\n', ['/cg']],
  ];
  for (const [name, mountinfo, expected] of cases) {
    await t.test(name, () => assert.deepEqual(parseCgroup2Mounts(mountinfo), expected));
  }
});

test('parseMountinfo unescapes the root field too', () => {
  const [entry] = parseMountinfo('1 2 0:1 /a\\040b /m rw - cgroup2 none rw');
  assert.deepEqual(entry, { root: '/a b', mountPoint: '/m', fstype: 'cgroup2' });
});

test('rankCgroup2Mounts prefers pure v2, then hybrid, then the rest in order', async (t) => {
  const cases: Array<[string, string[], string[]]> = [
    [
      'pure v2 first',
      ['/x', '/sys/fs/cgroup/unified', '/sys/fs/cgroup'],
      ['/sys/fs/cgroup', '/sys/fs/cgroup/unified', '/x'],
    ],
    [
      'hybrid before others',
      ['/host/sys/fs/cgroup', '/sys/fs/cgroup/unified'],
      ['/sys/fs/cgroup/unified', '/host/sys/fs/cgroup'],
    ],
    ['others keep their order', ['/b', '/a'], ['/b', '/a']],
    ['none', [], []],
  ];
  for (const [name, mounts, expected] of cases) {
    await t.test(name, () => assert.deepEqual(rankCgroup2Mounts(mounts), expected));
  }
});

test('findCgroup2Root errors tell the user what to do', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podmeter-mount-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fixture = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  await t.test('v1-only host', () => {
    assert.throws(
      () => findCgroup2Root({ mountinfoPath: fixture('v1', V1_ONLY_HOST) }),
      (error: unknown) =>
        error instanceof CgroupMountError &&
        error.code === 'ERR_PODMETER_NO_CGROUP2' &&
        error.message.includes('needs cgroup v2') &&
        error.message.includes('/sys/fs/cgroup/cpu,cpuacct') &&
        error.message.includes('mount -t cgroup2 none /sys/fs/cgroup/unified') &&
        error.message.includes('systemd.unified_cgroup_hierarchy=1'),
    );
  });

  await t.test('no cgroup mounted at all', () => {
    assert.throws(() => findCgroup2Root({ mountinfoPath: fixture('none', PURE_V2_HOST.split('\n')[0] ?? '') }), {
      code: 'ERR_PODMETER_NO_CGROUP2',
      message: /no cgroup2 filesystem is mounted/,
    });
  });

  await t.test('override that does not exist', () => {
    const missing = join(dir, 'missing');
    assert.throws(
      () => findCgroup2Root({ override: missing }),
      (error: unknown) => {
        assert.ok(error instanceof CgroupMountError);
        assert.equal(error.code, 'ERR_PODMETER_NOT_CGROUP2');
        assert.equal(error.path, missing);
        assert.match(error.message, /--cgroup-root .* does not exist/);
        return true;
      },
    );
  });

  await t.test('override on another filesystem', () => {
    assert.throws(
      () => findCgroup2Root({ override: dir }),
      (error: unknown) => {
        assert.ok(error instanceof CgroupMountError);
        assert.equal(error.code, 'ERR_PODMETER_NOT_CGROUP2');
        assert.equal(error.path, dir);
        assert.match(error.message, /not cgroup2/);
        return true;
      },
    );
  });

  await t.test(
    'override on cgroup v1 names it',
    { skip: !isCgroupV1('/sys/fs/cgroup/cpu') && 'no cgroup v1 cpu hierarchy here' },
    () => {
      assert.throws(() => findCgroup2Root({ override: '/sys/fs/cgroup/cpu' }), {
        code: 'ERR_PODMETER_NOT_CGROUP2',
        message: /is on cgroup v1, not cgroup2/,
      });
    },
  );
});

test('findCgroup2Root on this machine returns its cgroup2 mount', () => {
  const root = findCgroup2Root();
  assert.ok(isCgroup2(root), `${root} is not cgroup2`);
  assert.ok(parseCgroup2Mounts(readFileSync('/proc/self/mountinfo', 'utf8')).includes(root));
  // Hybrid hosts (this one) have tmpfs at /sys/fs/cgroup and cgroup2 at unified.
  if (!isCgroup2('/sys/fs/cgroup')) assert.equal(root, '/sys/fs/cgroup/unified');
});

test('findCgroup2Root: an override on cgroup2 wins, also a subdirectory', () => {
  const root = findCgroup2Root();
  assert.equal(findCgroup2Root({ override: root, mountinfoPath: '/nonexistent' }), root);
  // A child cgroup (made here when we may, e.g. as root) is on cgroup2 too: --cgroup-root may point into the tree.
  const child = join(root, `podmeter-test-unit-${process.pid}`);
  try {
    mkdirSync(child);
  } catch {
    return;
  }
  try {
    assert.equal(findCgroup2Root({ override: child }), child);
  } finally {
    rmdirSync(child);
  }
});

test('findCgroup2Root without a readable mountinfo probes the well-known places', () => {
  const root = findCgroup2Root();
  const wellKnown = root === '/sys/fs/cgroup' || root === '/sys/fs/cgroup/unified';
  if (wellKnown) assert.equal(findCgroup2Root({ mountinfoPath: '/nonexistent/mountinfo' }), root);
  else
    assert.throws(() => findCgroup2Root({ mountinfoPath: '/nonexistent/mountinfo' }), {
      code: 'ERR_PODMETER_NO_CGROUP2',
    });
});

function isCgroupV1(path: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${path} `) && !isCgroup2(path);
  } catch {
    return false;
  }
}
