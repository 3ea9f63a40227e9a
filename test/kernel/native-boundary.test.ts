// The native boundary (issue 23, item 3): every addon function that takes a
// map fd and a buffer, or a size it allocates for the kernel to fill, is
// called with generated arguments: buffers of random lengths, fds of other
// maps, of programs, links and files, closed fds, ids of other maps. Each
// such call must be a JS exception thrown before any map syscall (TypeError,
// or BpfError EBADF for an fd that is not open), never a crash, an
// out-of-bounds read or write (test/kernel/native-asan.test.ts runs this file
// under AddressSanitizer), or a write into another map; the same calls with
// the map's own sizes still work. mapUpdateAsync throws the same way before
// its promise; only the update's own failure rejects. conntrackReplies likewise: a buffer that is
// not whole 40-byte tuples, or an fd that is not a conntrack socket, throws
// before any netlink message. attachCgroupLink, which takes an open cgroup
// directory's fd: any argument that is not an int32 (or a path that is not a
// string) is a TypeError naming it, and a program or cgroup fd of another
// kind, closed or made up, the kernel's refusal; only podmeter's programs on
// the cgroup held open attach. The other calls that attach, detach, update
// links and pin take fds of another kind, closed fds, bad ids and non-numbers:
// each a JS exception, with no program attached and the link unchanged. Needs
// root (BPF maps, a test cgroup, bpffs, a
// network namespace) and python3 (test/helpers/mapholder.py makes the
// per-CPU maps).
import assert from 'node:assert/strict';
import { closeSync, openSync, readlinkSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { inspect } from 'node:util';
import fc from 'fast-check';
import {
  attachCgroup,
  BpfMap,
  BpfObject,
  bpfObjectPath,
  Cgroup,
  CollectionSpec,
  Link,
  type MapObject,
  queryCgroup,
  StatsMap,
} from '../../agent/kernel/bpf.ts';
import { Conntrack } from '../../agent/kernel/conntrack.ts';
import { BpfError } from '../../agent/kernel/errors.ts';
import { native } from '../../agent/kernel/native.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeNetns } from '../helpers/netns.ts';
import { MAP_TYPE, startHolder, uniqueComm } from '../helpers/mapHolder.ts';

/** Generated calls per property (each a few syscalls). */
const RUNS = 10_000;

interface Target {
  what: string;
  map: MapObject;
  storage: boolean;
}

/** One process-wide set of maps and other fds the properties draw from. */
async function fixture(t: test.TestContext) {
  const pm = BpfObject.load(bpfObjectPath('podmeter'));
  const legacy = BpfObject.load(bpfObjectPath('legacy'));
  t.after(() => {
    pm.close();
    legacy.close();
  });
  // Per-CPU maps (values rounded up to 8 bytes per possible CPU), and a
  // sentinel of the slot names' key and value sizes that no call means:
  // made by another process, pinned, and opened here from the pins.
  const pins = makeBpffsDir(t);
  const holder = await startHolder(t, { comm: uniqueComm('nb') });
  const fromHolder = async (name: string, type: number, key: number, value: number, max: number): Promise<BpfMap> => {
    const made = await holder.create({ name, type, key, value, max });
    const path = join(pins.path, name);
    await holder.pin(made.fd, path);
    return BpfMap.fromPin(path);
  };
  const percpuArray = await fromHolder('pmt_pcpu_array', MAP_TYPE.percpuArray, 4, 12, 4);
  const percpuHash = await fromHolder('pmt_pcpu_hash', MAP_TYPE.percpuHash, 8, 8, 16);
  const sentinel = await fromHolder('pmt_sentinel', MAP_TYPE.hash, 4, 64, 15);
  // A map that stays (pinned) whose fd here is closed: its number may be reused by anything.
  const closedMap = await fromHolder('pmt_closed', MAP_TYPE.hash, 4, 64, 15);
  const closed = { fd: closedMap.fd, id: closedMap.id };
  await holder.stop();

  const targets: Target[] = [
    { what: 'storage', map: pm.takeStatsMap('podmeter_stats'), storage: true },
    { what: 'legacy storage', map: legacy.takeStatsMap('podmeter_stats'), storage: true },
    { what: 'peer trie', map: pm.takeMap('podmeter_peers'), storage: false },
    { what: 'generation', map: pm.takeMap('podmeter_gen'), storage: false },
    { what: 'slot names', map: pm.takeMap('podmeter_names'), storage: false },
    { what: 'per-CPU array', map: percpuArray, storage: false },
    { what: 'per-CPU hash', map: percpuHash, storage: false },
  ];
  // Fds that are not (or no longer) any map the call means.
  const cg = makeTestCgroup(t);
  const link = attachCgroup({ cgroupPath: cg.path, program: pm.program('podmeter_egress') });
  const file = openSync('/dev/null', 'r');
  t.after(() => {
    for (const map of [...targets.map((x) => x.map), sentinel]) map.close();
    link.close();
    closeSync(file);
  });
  closedMap.close(); // last: nothing here opens an fd after it, so its number stays unused
  const others = {
    sentinel: sentinel.fd,
    closed: closed.fd,
    program: pm.program('podmeter_ingress').fd,
    link: link.fd,
    file,
    stdin: 0,
    negative: -1,
  };
  return { targets, sentinel, others, closedId: closed.id };
}

type Fixture = Awaited<ReturnType<typeof fixture>>;

/**
 * A generated call: drawn for `target` (sizes are often its own), with the fd,
 * id and sizes it actually passes; `meant` is the map the fd and id agree on
 * (undefined when they do not: the call must throw).
 */
interface Call {
  target: Target;
  meant: Target | undefined;
  fd: number;
  mapId: number;
  keyLen: number;
  valueLen: number;
  /** mapLookup's valueSize, storage*'s valueSize (any number: 3.5, 2^32 + 4, NaN). */
  size: number;
  words: number;
  cgroupId: bigint;
  attachType: number;
  seed: number;
}

function calls(fx: Fixture): fc.Arbitrary<Call> {
  const ids = fx.targets.map((x) => x.map.id);
  return fc
    .record({
      targetIndex: fc.nat(fx.targets.length - 1),
      fdChoice: fc.oneof(
        { weight: 6, arbitrary: fc.constant<'target'>('target') },
        { weight: 1, arbitrary: fc.nat(fx.targets.length - 1).map((i) => ({ other: i })) },
        {
          weight: 2,
          arbitrary: fc
            .constantFrom(...(Object.keys(fx.others) as (keyof Fixture['others'])[]))
            .map((named) => ({ named })),
        },
        { weight: 1, arbitrary: fc.integer({ min: -3, max: 4096 }).map((fd) => ({ fd })) },
      ),
      idChoice: fc.oneof(
        { weight: 6, arbitrary: fc.constant<'target'>('target') },
        // Never the sentinel's id: no call may mean it.
        { weight: 1, arbitrary: fc.constantFrom(...ids, fx.closedId) },
        { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double()) },
      ),
      keyLen: fc.oneof(fc.constant(-1), fc.nat(80)),
      valueLen: fc.oneof(fc.constant(-1), fc.nat(4200)),
      size: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, fc.nat(4200), fc.double(), fc.constant(2 ** 32 + 16)),
      words: fc.oneof(fc.constant(-1), fc.nat(40), fc.double()),
      cgroupId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      attachType: fc.nat(3),
      seed: fc.nat(),
    })
    .map((r) => {
      const target = fx.targets[r.targetIndex]!;
      const m = target.map;
      let fd: number;
      if (r.fdChoice === 'target') fd = m.fd;
      else if ('named' in r.fdChoice) fd = fx.others[r.fdChoice.named];
      else if ('other' in r.fdChoice) fd = fx.targets[r.fdChoice.other]!.map.fd;
      else fd = r.fdChoice.fd;
      const mapId = r.idChoice === 'target' ? m.id : r.idChoice;
      const meant = fx.targets.find((x) => x.map.fd === fd && x.map.id === mapId);
      // -1 stands for "the right value": drawn often, so that good calls are tested too.
      return {
        target,
        meant,
        fd,
        mapId,
        keyLen: r.keyLen < 0 ? m.keySize : r.keyLen,
        valueLen: r.valueLen < 0 ? m.valueBytes : r.valueLen,
        size: r.size === -1 ? (target.storage ? m.valueSize : m.valueBytes) : r.size,
        words: r.words === -1 ? Math.min(2, m.valueSize / 8) : r.words,
        cgroupId: r.cgroupId,
        attachType: r.attachType,
        seed: r.seed,
      };
    });
}

function bytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed + i * 131) & 0xff;
  return out;
}

/**
 * Runs `fn`; a call that `good` says is right may succeed or fail in the
 * kernel's own map syscall (an array index out of range, a trie prefix too
 * long, no such key: a BpfError naming a bpf(BPF_MAP_*) syscall); any other
 * must throw a TypeError or a BpfError that no map syscall made.
 */
function expectOutcome(
  good: boolean,
  fn: () => unknown,
  check: (result: unknown) => void,
  describe: () => string,
): void {
  let result: unknown;
  let error: unknown;
  try {
    result = fn();
  } catch (err) {
    error = err;
  }
  if (good) {
    if (error === undefined) return check(result);
    assert.ok(
      error instanceof BpfError && /^bpf\(BPF_MAP_/.test(error.syscall ?? ''),
      `a right call failed outside the map syscall: ${inspect(error)} (${describe()})`,
    );
    return;
  }
  assert.ok(error !== undefined, `expected an exception, got ${String(result)} (${describe()})`);
  const checked = error instanceof TypeError || (error instanceof BpfError && !/BPF_MAP_/.test(error.syscall ?? ''));
  assert.ok(
    checked,
    `expected a TypeError or a BpfError before any map syscall, got ${inspect(error)} (${describe()})`,
  );
}

const show = (c: Call) => () =>
  `drawn for ${c.target.what} (fd ${c.target.map.fd}, id ${c.target.map.id}): fd ${c.fd}, id ${c.mapId}, meant ${c.meant?.what ?? 'nothing'}; key ${c.keyLen}, value ${c.valueLen}, size ${c.size}, words ${c.words}`;

test(
  'element calls with random buffer sizes, fds and ids throw unless every size and the map are right',
  { timeout: 600_000 },
  async (t) => {
    const fx = await fixture(t);
    const sentinelBefore = native.mapKeys(fx.sentinel.fd, fx.sentinel.keySize, fx.sentinel.id);
    let good = 0;
    fc.assert(
      fc.property(
        calls(fx),
        fc.constantFrom('mapUpdate', 'mapDelete', 'mapLookup', 'mapKeys', 'mapEntries', 'mapDeleteKeys'),
        (c, fn) => {
          const m = (c.meant ?? c.target).map;
          const keyOk = c.keyLen === m.keySize;
          const ok = c.meant !== undefined;
          const key = bytes(c.keyLen, c.seed);
          switch (fn) {
            case 'mapUpdate': {
              const right = ok && keyOk && c.valueLen === m.valueBytes;
              good += right ? 1 : 0;
              return expectOutcome(
                right,
                () => native.mapUpdate(c.fd, key, bytes(c.valueLen, c.seed), c.mapId),
                () => {},
                show(c),
              );
            }
            case 'mapDelete':
              return expectOutcome(
                ok && keyOk,
                () => native.mapDelete(c.fd, key, c.mapId),
                (r) => assert.equal(typeof r, 'boolean'),
                show(c),
              );
            case 'mapLookup':
              return expectOutcome(
                ok && keyOk && c.size === m.valueBytes,
                () => native.mapLookup(c.fd, key, c.size, c.mapId),
                (r) =>
                  assert.ok(
                    r === undefined || (r instanceof Uint8Array && r.length === m.valueBytes),
                    `lookup returned ${String(r)}`,
                  ),
                show(c),
              );
            case 'mapKeys':
              return expectOutcome(
                ok && c.keyLen === m.keySize,
                () => native.mapKeys(c.fd, c.keyLen, c.mapId),
                (r) => assert.ok(Array.isArray(r) && r.every((k) => k instanceof Uint8Array && k.length === m.keySize)),
                show(c),
              );
            case 'mapEntries':
              return expectOutcome(
                ok && keyOk && c.size === m.valueBytes,
                () => native.mapEntries(c.fd, c.keyLen, c.size, c.mapId),
                (r) => {
                  const { count, keys, values } = r as ReturnType<typeof native.mapEntries>;
                  assert.ok(Number.isInteger(count) && count >= 0, `mapEntries counted ${count}`);
                  assert.equal(keys.length, count * m.keySize, 'keys laid end to end');
                  assert.equal(values.length, count * m.valueBytes, 'values laid end to end');
                },
                show(c),
              );
            case 'mapDeleteKeys': {
              // Whole keys of the drawn length (often the map's own), sometimes a byte more.
              const length = c.keyLen * (c.seed % 4) + (c.seed % 5 === 0 ? 1 : 0);
              return expectOutcome(
                ok && m.keySize > 0 && length % m.keySize === 0,
                () => native.mapDeleteKeys(c.fd, bytes(length, c.seed), c.mapId),
                (r) => assert.ok(Number.isInteger(r) && (r as number) >= 0 && (r as number) <= length / m.keySize),
                show(c),
              );
            }
          }
        },
      ),
      { numRuns: RUNS },
    );
    assert.ok(good > RUNS / 100, `enough right updates were generated to show they work (${good})`);
    // The sentinel had the slot names' key and value sizes: only its id told it apart.
    assert.deepEqual(
      native.mapKeys(fx.sentinel.fd, fx.sentinel.keySize, fx.sentinel.id),
      sentinelBefore,
      'nothing was written into a map no call meant',
    );
  },
);

test('mapUpdateAsync with random buffer sizes, fds and ids throws before its promise unless every size and the map are right', async (t) => {
  const fx = await fixture(t);
  const sentinelBefore = native.mapKeys(fx.sentinel.fd, fx.sentinel.keySize, fx.sentinel.id);
  let good = 0;
  await fc.assert(
    fc.asyncProperty(calls(fx), async (c) => {
      const m = (c.meant ?? c.target).map;
      const right = c.meant !== undefined && c.keyLen === m.keySize && c.valueLen === m.valueBytes;
      let promise: Promise<void>;
      try {
        promise = native.mapUpdateAsync(c.fd, bytes(c.keyLen, c.seed), bytes(c.valueLen, c.seed), c.mapId);
      } catch (err) {
        assert.ok(!right, `a right call threw: ${inspect(err)} (${show(c)()})`);
        assert.ok(
          err instanceof TypeError || (err instanceof BpfError && !/BPF_MAP_/.test(err.syscall ?? '')),
          `expected a TypeError or a BpfError before any map syscall, got ${inspect(err)} (${show(c)()})`,
        );
        return;
      }
      assert.ok(right, `a wrong call got as far as a promise (${show(c)()})`);
      good++;
      await promise.catch((err: unknown) =>
        assert.ok(
          err instanceof BpfError && err.syscall === 'bpf(BPF_MAP_UPDATE_ELEM)',
          `a right update failed outside its syscall: ${inspect(err)} (${show(c)()})`,
        ),
      );
    }),
    { numRuns: RUNS / 5 },
  );
  assert.ok(good > RUNS / 500, `enough right updates were generated to show they work (${good})`);
  assert.deepEqual(
    native.mapKeys(fx.sentinel.fd, fx.sentinel.keySize, fx.sentinel.id),
    sentinelBefore,
    'nothing was written into a map no call meant',
  );
});

test(
  'storage calls with random sizes, fds and ids throw unless the fd is the per-CPU cgroup storage map meant and valueSize is its own',
  { timeout: 600_000 },
  async (t) => {
    const fx = await fixture(t);
    fc.assert(
      fc.property(
        calls(fx),
        fc.constantFrom('storageLookup', 'storageSums', 'storageSumsMany', 'storageKeys'),
        fc.boolean(),
        (c, fn, withPrevious) => {
          const m = (c.meant ?? c.target).map;
          const isStorage = c.meant?.storage === true;
          const sizeOk = isStorage && c.size === m.valueSize;
          switch (fn) {
            case 'storageLookup':
              return expectOutcome(
                sizeOk,
                () => native.storageLookup(c.fd, c.cgroupId, c.attachType, c.size, c.mapId),
                (r) => assert.ok(r === undefined || (r instanceof BigUint64Array && r.length * 8 === m.valueBytes)),
                show(c),
              );
            case 'storageSums': {
              const wordsOk = Number.isInteger(c.words) && c.words >= 0 && c.words <= m.valueSize / 8;
              const previous = withPrevious ? new BigUint64Array(wordsOk ? 2 * c.words : 2) : undefined;
              return expectOutcome(
                sizeOk && wordsOk,
                () => native.storageSums(c.fd, c.cgroupId, c.size, c.words, previous, c.mapId),
                (r) => assert.ok(r === undefined || (r instanceof BigUint64Array && r.length === 2 * c.words)),
                show(c),
              );
            }
            case 'storageSumsMany': {
              const wordsOk = Number.isInteger(c.words) && c.words >= 0 && c.words <= m.valueSize / 8;
              const previous = withPrevious ? new BigUint64Array(wordsOk ? 2 * c.words : 2) : undefined;
              return expectOutcome(
                sizeOk && wordsOk,
                () =>
                  native.storageSumsMany(
                    c.fd,
                    [c.cgroupId, c.cgroupId],
                    c.size,
                    c.words,
                    [previous, undefined],
                    c.mapId,
                  ),
                (r) =>
                  assert.ok(
                    Array.isArray(r) &&
                      r.length === 2 &&
                      r.every((x) => x === undefined || (x instanceof BigUint64Array && x.length === 2 * c.words)),
                  ),
                show(c),
              );
            }
            case 'storageKeys':
              return expectOutcome(
                isStorage,
                () => native.storageKeys(c.fd, c.mapId),
                (r) => assert.ok(Array.isArray(r)),
                show(c),
              );
          }
        },
      ),
      { numRuns: RUNS },
    );
  },
);

test('conntrackReplies with random lengths and fds throws unless the buffer is whole tuples and the fd a conntrack socket', async (t) => {
  // The socket first: the fixture's closed fd number must stay unused.
  const netns = makeNetns(t);
  const ct = Conntrack.open({ netns: `/run/netns/${netns.name}` });
  t.after(() => ct.close());
  const fx = await fixture(t);
  const fds: Record<string, number> = { conntrack: ct.fd, map: fx.targets[0]!.map.fd, ...fx.others };
  const NETLINK_SYSCALLS = ['sendto', 'recv', 'netlink(IPCTNL_MSG_CT_GET)'];
  let good = 0;
  fc.assert(
    fc.property(
      fc.oneof(
        { weight: 4, arbitrary: fc.constant('conntrack') },
        { weight: 3, arbitrary: fc.constantFrom(...Object.keys(fds)) },
        { weight: 1, arbitrary: fc.oneof(fc.integer({ min: -3, max: 4096 }), fc.double()).map(String) },
      ),
      fc.nat(300),
      fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: -39, max: 39 })),
      fc.nat(),
      (fdChoice, count, extra, seed) => {
        const fd = fds[fdChoice] ?? Number(fdChoice);
        const length = Math.max(0, count * 40 + extra);
        const tuples = bytes(length, seed);
        for (let at = 36; at < length; at += 40) tuples[at] = 17; // UDP: a protocol with ports, as the facade sends
        const right = fd === ct.fd && length % 40 === 0;
        good += right ? 1 : 0;
        let result: Uint8Array | undefined;
        let error: unknown;
        try {
          result = native.conntrackReplies(fd, tuples);
        } catch (err) {
          error = err;
        }
        const what = `fd ${fdChoice} (${fd}), ${length} bytes`;
        if (right) {
          assert.equal(error, undefined, `${what}: ${inspect(error)}`);
          assert.ok(result instanceof Uint8Array && result.length === (length / 40) * 24, what);
          return;
        }
        assert.ok(
          error instanceof TypeError || (error instanceof BpfError && !NETLINK_SYSCALLS.includes(error.syscall ?? '')),
          `${what}: expected a TypeError or a BpfError before any netlink message, got ${inspect(error ?? result)}`,
        );
        if (fd === ct.fd)
          assert.match(error.message, new RegExp(`tuples of ${length} bytes, not a whole number of 40-byte tuples`));
      },
    ),
    { numRuns: RUNS / 10 },
  );
  assert.ok(good > RUNS / 100, `enough right calls were generated to show they work (${good})`);
});

test('describing an fd of another kind (map, program, link, file, closed) throws instead of misreading it', async (t) => {
  const fx = await fixture(t);
  const kinds = {
    map: fx.targets[0]!.map.fd,
    program: fx.others.program,
    link: fx.others.link,
    file: fx.others.file,
    closed: fx.others.closed,
    negative: -1,
  };
  const describe = {
    map: (fd: number) => native.mapInfo(fd),
    program: (fd: number) => native.progInfo(fd),
    link: (fd: number) => native.linkInfo(fd),
  } as const;
  for (const [fdKind, fd] of Object.entries(kinds)) {
    for (const [want, fn] of Object.entries(describe)) {
      if (fdKind === want) {
        assert.equal(typeof fn(fd).id, 'number');
        continue;
      }
      assert.throws(
        () => fn(fd),
        (err: unknown) => err instanceof TypeError || (err instanceof BpfError && err.code === 'EBADF'),
        `${want}Info of a ${fdKind} fd`,
      );
    }
  }
});

test("linkCgroupIds gives a cgroup link its cgroup's id (0n once detached) and any other fd (a prog array, which read as a link would be a cgroup link, other maps, a program, a file, a link's fd reused by a prog array, closed) an errno instead; fds not in an Int32Array throw", async (t) => {
  const fx = await fixture(t);
  const { sentinel, program, link, file } = fx.others;
  const { EBADF, EINVAL } = osConstants.errno;
  const pm = BpfObject.load(bpfObjectPath('podmeter'));
  t.after(() => pm.close());
  const cg = makeTestCgroup(t);
  const pins = makeBpffsDir(t);
  // The kernel describes any BPF fd into a bpf_link_info: a prog array's
  // type (3) is BPF_LINK_TYPE_CGROUP's, its max_entries (7) where a cgroup id is.
  const holder = await startHolder(t, { comm: uniqueComm('lc') });
  const made = await holder.create({ name: 'pmt_prog_array', type: MAP_TYPE.progArray, key: 4, value: 4, max: 7 });
  const pin = join(pins.path, 'prog_array');
  await holder.pin(made.fd, pin);
  await holder.stop();
  const progArray = native.objGet(pin);
  t.after(() => closeSync(progArray));
  assert.equal(native.mapInfo(progArray).type, 3, 'a prog array');
  const own = attachCgroup({ cgroupPath: cg.path, program: pm.program('podmeter_ingress') });
  const linkCgroup = native.linkInfo(link).cgroupId!;
  const want: [string, number, bigint, number][] = [
    ['link', link, linkCgroup, 0],
    ['own link', own.fd, cg.id, 0],
    ['prog array', progArray, 0n, EINVAL],
    ['hash map', sentinel, 0n, EINVAL],
    ['storage map', fx.targets[0]!.map.fd, 0n, EINVAL],
    ['program', program, 0n, EINVAL],
    ['file', file, 0n, EINVAL],
    ['negative', -1, 0n, EBADF],
    ['largest int32', 2 ** 31 - 1, 0n, EBADF],
  ];
  const check = (when: string) => {
    const { cgroupIds, errnos } = native.linkCgroupIds(Int32Array.from(want, ([, fd]) => fd));
    assert.deepEqual(
      want.map(([what], i) => [what, cgroupIds[i], errnos[i]]),
      want.map(([what, , id, errno]) => [what, id, errno]),
      when,
    );
  };
  check('first call: each fd read');
  check('again: the links known, the others read again');
  own.detach();
  want[1]![2] = 0n;
  check('own link detached: 0n, still a cgroup link');
  // Its fd closed and the number taken by a prog array before the next call: not read as the link it was.
  const ownFd = own.fd;
  own.close();
  assert.deepEqual(Link.cgroupIds([own]), [undefined], 'a closed Link: the kernel cannot say');
  const opened: number[] = [];
  t.after(() => opened.forEach((fd) => closeSync(fd)));
  while (opened.at(-1) !== ownFd && opened.length < 8) opened.push(native.objGet(pin));
  assert.equal(opened.at(-1), ownFd, "the prog array took the link's fd number");
  want[1] = ['prog array in a link fd once', ownFd, 0n, EINVAL];
  check('a link fd reused by a prog array');
  closeSync(opened.pop()!);
  want[1] = ['closed', ownFd, 0n, EBADF];
  check('that fd closed');
  for (const bad of [[link], new Uint32Array([link]), new Float64Array([link]), link, undefined, 'x'])
    assert.throws(() => (native.linkCgroupIds as (fds: unknown) => unknown)(bad), {
      name: 'TypeError',
      message: /linkCgroupIds: fds must be an Int32Array/,
    });
});

test('an object load that reuses an fd of another kind (program, link, file, closed, not an integer) for a map throws naming the map', async (t) => {
  const fx = await fixture(t);
  const path = bpfObjectPath('podmeter');
  const kinds = {
    program: fx.others.program,
    link: fx.others.link,
    file: fx.others.file,
    closed: fx.others.closed,
    negative: -1,
    fraction: 3.5,
    string: 'x',
  };
  // Every map of the object: libbpf frees (and replaces) a map's name, so the
  // failure of any one of them must be reported without reading it from libbpf.
  for (const name of CollectionSpec.load(path).maps.keys()) {
    for (const [kind, fd] of Object.entries(kinds)) {
      assert.throws(
        () => native.openObject(path, { [name]: fd as number }),
        (err: unknown) =>
          (err instanceof TypeError || (err instanceof BpfError && err.code === 'EBADF')) &&
          err.message.includes(`reuse of map ${name}:`),
        `reuse of a ${kind} fd for ${name}`,
      );
    }
  }
  // A map of the right shape is reused: the loaded object's map is that map.
  const gen = fx.targets.find((x) => x.what === 'generation')!.map;
  const loaded = BpfObject.load(path, new Map([['podmeter_gen', gen]]));
  t.after(() => loaded.close());
  const reused = loaded.takeMap('podmeter_gen');
  t.after(() => reused.close());
  assert.equal(reused.id, gen.id);
});

test('the typed facade refuses wrong lengths before the addon, naming the map and both sizes; right ones work', async (t) => {
  const fx = await fixture(t);
  const names = fx.targets.find((x) => x.what === 'slot names')!.map as BpfMap;
  assert.throws(() => names.update(new Uint8Array(3), new Uint8Array(64)), {
    name: 'TypeError',
    message: /key of 3 bytes for map 'podmeter_names' \(id \d+\), whose keys are 4 bytes/,
  });
  assert.throws(() => names.update(new Uint8Array(4), new Uint8Array(63)), {
    name: 'TypeError',
    message: /value of 63 bytes for map 'podmeter_names' .*values are 64 bytes/,
  });
  assert.throws(() => names.lookup(new Uint8Array(4), 4), { name: 'TypeError', message: /value of 4 bytes/ });
  names.update(new Uint8Array(4), bytes(64, 1));
  assert.deepEqual(names.lookup(new Uint8Array(4), 64), bytes(64, 1));
  const percpu = fx.targets.find((x) => x.what === 'per-CPU array')!.map as BpfMap;
  // 12-byte values: 16 per possible CPU.
  assert.equal(percpu.valueBytes % 16, 0);
  assert.throws(() => percpu.update(new Uint8Array(4), new Uint8Array(12)), {
    name: 'TypeError',
    message: /whose values are \d+ bytes/,
  });
  percpu.update(new Uint8Array(4), bytes(percpu.valueBytes, 7));
  assert.deepEqual(percpu.lookup(new Uint8Array(4), percpu.valueBytes), bytes(percpu.valueBytes, 7));
  assert.throws(() => names.entries(4, 63), {
    name: 'TypeError',
    message: /^entries: value of 63 bytes for map 'podmeter_names' .*values are 64 bytes/,
  });
  assert.throws(() => names.deleteKeys(new Uint8Array(6)), {
    name: 'TypeError',
    message: /^deleteKeys: keys of 6 bytes for map 'podmeter_names' \(id \d+\), not a whole number of its 4-byte keys/,
  });
  assert.throws(() => void names.updateAsync(new Uint8Array(5), new Uint8Array(64)), {
    name: 'TypeError',
    message: /^updateAsync: key of 5 bytes for map 'podmeter_names' .*keys are 4 bytes/,
  });
  await names.updateAsync(new Uint8Array(4), bytes(64, 2));
  const all = names.entries(4, 64); // an array (walked: no batch read): every index, in order
  assert.equal(all.count, names.info().maxEntries);
  assert.deepEqual([all.keys.subarray(0, 4), all.values.subarray(0, 64)], [new Uint8Array(4), bytes(64, 2)]);
  // A batch read (a per-CPU hash has one; the slot names' array and the trie are walked) gives what lookups give.
  const hash = fx.targets.find((x) => x.what === 'per-CPU hash')!.map as BpfMap;
  for (let i = 1; i <= 12; i++) hash.update(bytes(8, i), bytes(hash.valueBytes, i * 3));
  const read = hash.entries(8, hash.valueBytes);
  assert.ok(read.count >= 12);
  for (let i = 0; i < read.count; i++) {
    const key = read.keys.subarray(i * 8, (i + 1) * 8);
    assert.deepEqual(
      read.values.subarray(i * hash.valueBytes, (i + 1) * hash.valueBytes),
      hash.lookup(key, hash.valueBytes),
    );
  }
  assert.equal(hash.deleteKeys(read.keys), read.count);
  assert.equal(hash.deleteKeys(read.keys), 0, 'keys no longer there are skipped');
  assert.equal(hash.entries(8, hash.valueBytes).count, 0);
  // The native side refuses as well (a caller past the facade), naming the map and both sizes.
  assert.throws(() => native.mapDeleteKeys(names.fd, new Uint8Array(6), names.id), {
    name: 'TypeError',
    message: /keys of 6 bytes for map 'podmeter_names' \(id \d+\), not a whole number of its 4-byte keys/,
  });
  assert.throws(() => native.mapEntries(names.fd, 4, 63, names.id), {
    name: 'TypeError',
    message: /^mapEntries: value of 63 bytes for map 'podmeter_names' .*values are 64 bytes/,
  });
  const storage = fx.targets[0]!.map as StatsMap;
  assert.throws(() => storage.readUnit(-1n), RangeError);
  assert.equal(storage.readUnit(1n), undefined);
});

test('the other calls that attach, detach, update and pin throw for fds of another kind, closed fds, bad ids and non-numbers, changing nothing', async (t) => {
  const fx = await fixture(t);
  const { program, link, closed, file, sentinel, negative } = fx.others;
  const cg = makeTestCgroup(t);
  const pins = makeBpffsDir(t);
  const egress = native.linkInfo(link);
  const running = native.progFdById(egress.progId); // the egress program the link runs
  t.after(() => closeSync(running));
  const notPrograms = { map: sentinel, link, file, closed, negative, string: 'x' as unknown as number };
  const notLinks = { map: sentinel, program, file, closed, negative, undefined: undefined as unknown as number };
  const throwsJs = (fn: () => unknown, what: string) =>
    assert.throws(fn, (err: unknown) => err instanceof TypeError || err instanceof BpfError, what);
  for (const type of [0, 1]) {
    for (const [kind, fd] of Object.entries(notPrograms)) {
      throwsJs(() => native.attachCgroupMulti(fd, cg.path, type), `attachCgroupMulti of a ${kind} fd`);
      throwsJs(() => native.detachCgroupMulti(fd, cg.path, type), `detachCgroupMulti of a ${kind} fd`);
    }
    assert.deepEqual(native.queryCgroup(cg.path, type), [], 'nothing was attached');
    throwsJs(() => native.attachCgroupMulti(program, join(cg.path, 'missing'), type), 'attach to a missing cgroup');
  }
  throwsJs(() => native.queryCgroup(join(cg.path, 'missing'), 0), 'query of a missing cgroup');
  throwsJs(() => native.queryCgroup(cg.path, 2 ** 31), 'query of an attach type that is none');
  for (const [kind, fd] of Object.entries(notLinks)) {
    throwsJs(() => native.linkDetach(fd), `linkDetach of a ${kind} fd`);
    throwsJs(() => native.linkUpdate(fd, program, program), `linkUpdate of a ${kind} fd as the link`);
  }
  for (const [kind, fd] of Object.entries(notPrograms)) {
    throwsJs(() => native.linkUpdate(link, fd, running), `linkUpdate to a ${kind} fd as the program`);
    throwsJs(() => native.linkUpdate(link, program, fd), `linkUpdate with a ${kind} fd as the replaced program`);
  }
  const after = native.linkInfo(link);
  assert.equal(after.progId, egress.progId, 'the link still runs its program');
  assert.equal(after.cgroupId, egress.cgroupId, 'and is still attached');
  for (const id of [0, -1, 2 ** 32 + 1, 1.5, Number.NaN, fx.closedId])
    throwsJs(() => native.progFdById(id), `progFdById(${id})`);
  for (const [kind, fd] of Object.entries({ file, closed, negative, stdin: 0 })) {
    const path = join(pins.path, `pin-${kind}`);
    throwsJs(() => native.objPin(fd, path), `objPin of a ${kind} fd`);
    throwsJs(() => native.objGet(path), `objGet of the pin a ${kind} fd did not make`);
  }
  throwsJs(() => native.objGet('/dev/null'), 'objGet of a file outside bpffs');
  throwsJs(() => native.objPin(program, '/dev/null'), 'objPin over a file outside bpffs');
});

test('attachCgroupLink with random fds, attach types and paths: a bad argument is a TypeError naming it, an fd of another kind the kernel refusal, a link only of a cgroup_skb program on the cgroup its fd holds; openCgroup refuses what is not a directory', async (t) => {
  const fx = await fixture(t);
  const pm = BpfObject.load(bpfObjectPath('podmeter'));
  t.after(() => pm.close());
  const programs = [pm.program('podmeter_ingress'), pm.program('podmeter_egress')];
  const cg = makeTestCgroup(t);
  const cgroup = Cgroup.open(cg.path);
  t.after(() => cgroup.close());
  assert.equal(cgroup.id, statSync(cg.path, { bigint: true }).ino, "a cgroup's id is its directory's inode number");
  const fds: Record<string, number> = {
    ingress: programs[0]!.fd,
    egress: programs[1]!.fd,
    cgroup: cgroup.fd,
    map: fx.targets[0]!.map.fd,
    ...fx.others,
  };
  const fdArg = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...Object.keys(fds)).map((named) => fds[named]) },
    { weight: 1, arbitrary: fc.integer({ min: -3, max: 4096 }) },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(3.5, NaN, 2 ** 40, '7', undefined, null, 7n) },
  );
  const typeArg = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...programs.map((p) => p.attachType)) },
    { weight: 1, arbitrary: fc.integer({ min: -1, max: 64 }) },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(1.5, NaN, '0', undefined) },
  );
  const pathArg = fc.oneof(
    { weight: 6, arbitrary: fc.constant<unknown>(cg.path) },
    fc.constantFrom<unknown>(undefined, 1),
  );
  const isInt32 = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31;
  let attached = 0;
  fc.assert(
    fc.property(
      fc.oneof(
        { weight: 3, arbitrary: fc.tuple(fdArg, fdArg, typeArg, pathArg) },
        // Right calls, drawn often so that they are tested too.
        fc
          .constantFrom(...programs)
          .map((p) => [p.fd, cgroup.fd, p.attachType, cg.path] as [unknown, unknown, unknown, unknown]),
      ),
      ([progFd, cgroupFd, attachType, path]) => {
        const what = `attachCgroupLink(${String(progFd)}, ${String(cgroupFd)}, ${String(attachType)}, ${String(path)})`;
        let result: unknown;
        let error: unknown;
        try {
          result = (native.attachCgroupLink as (...args: unknown[]) => number)(progFd, cgroupFd, attachType, path);
        } catch (err) {
          error = err;
        }
        const ints: [string, unknown][] = [
          ['progFd', progFd],
          ['cgroupFd', cgroupFd],
          ['attachType', attachType],
        ];
        const badArg = ints.find(([, v]) => !isInt32(v))?.[0];
        if (badArg !== undefined || typeof path !== 'string') {
          assert.ok(error instanceof TypeError, `${what}: expected a TypeError, got ${inspect(error ?? result)}`);
          assert.match(error.message, new RegExp(`attachCgroupLink: ${badArg ?? 'cgroupPath'}`), what);
          return;
        }
        const program = programs.find((p) => p.fd === progFd);
        if (error !== undefined) {
          assert.ok(
            error instanceof BpfError && error.syscall === 'bpf(BPF_LINK_CREATE)',
            `${what}: expected the kernel's refusal, got ${inspect(error)}`,
          );
          assert.ok(error.message.includes(`'${cg.path}'`), `${what}: the message names the cgroup: ${error.message}`);
          return;
        }
        // Only a program of its attach type on an open cgroup directory (ours, or one a random number hit), and the link is on that cgroup.
        assert.ok(typeof result === 'number' && result >= 0, what);
        const link = new Link(result);
        try {
          const target = readlinkSync(`/proc/self/fd/${cgroupFd as number}`);
          assert.equal(link.info().cgroupId, statSync(target, { bigint: true }).ino, `${what}: linked to ${target}`);
          assert.equal(native.progInfo(progFd as number).typeName, 'cgroup_skb', what);
          if (program !== undefined && cgroupFd === cgroup.fd) attached++;
        } finally {
          link.close();
        }
      },
    ),
    { numRuns: RUNS / 10 },
  );
  assert.ok(attached > RUNS / 200, `enough right calls were generated to show they work (${attached})`);
  assert.deepEqual(
    [queryCgroup(cg.path, 'ingress'), queryCgroup(cg.path, 'egress')],
    [[], []],
    'nothing left attached',
  );

  // openCgroup: a string path only; a file or a missing path is the kernel's refusal (nothing left open).
  for (const bad of [undefined, 3, null, {}])
    assert.throws(() => (native.openCgroup as (p: unknown) => unknown)(bad), {
      name: 'TypeError',
      message: /openCgroup: cgroupPath must be a string/,
    });
  for (const [path, code] of [
    ['/dev/null', 'ENOTDIR'],
    [join(cg.path, 'missing'), 'ENOENT'],
  ] as const)
    assert.throws(() => Cgroup.open(path), { name: 'BpfError', code, path, syscall: 'open' });
});
