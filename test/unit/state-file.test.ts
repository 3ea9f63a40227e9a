/**
 * The agent's state file (agent/counting/state.ts), issue 23:
 * - fsynced before its rename, and its directory after, on a thread of
 *   libuv's pool: watched with strace (the real syscalls of a real save;
 *   skipped, saying so, without strace); saves during a write coalesce;
 * - one record that does not decode drops only that record, reported with
 *   why; the others are kept. A file that is not a state file at all is
 *   still set aside whole (test/faults/agent-storage.test.ts).
 * No root needed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { StateStore, type UnitRecord } from '../../agent/counting/state.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';

const STATE_TS = fileURLToPath(new URL('../../agent/counting/state.ts', import.meta.url));
const hasStrace = spawnSync('strace', ['-V']).status === 0;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const counters = (bytes: bigint) => ({ ingress: { bytes, packets: 1n }, egress: { bytes, packets: 2n } });
const record = (id: bigint, relPath: string): UnitRecord => ({
  id,
  relPath,
  kind: 'cgroup',
  attachedAt: 1,
  network: counters(100n + id),
  byClass: { ingress: {}, egress: {} },
});

test(
  'save(): the temp file is fsynced (off the event loop) before it is renamed over state.json, and the directory after',
  { skip: !hasStrace && 'strace is not installed' },
  (t) => {
    const dir = tempDir(t);
    const script = `import { StateStore } from ${JSON.stringify(STATE_TS)}; new StateStore(${JSON.stringify(dir)}).save([], []);`;
    const trace = join(dir, 'trace');
    execFileSync('strace', [
      '-f',
      '-qq',
      '-o',
      trace,
      '-e',
      'trace=openat,fsync,fdatasync,close,rename,renameat,renameat2',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ]);
    const lines = readFileSync(trace, 'utf8').split('\n');
    const opened = lines.find((l) => /openat\(.*state\.json\.tmp".*= (\d+)$/.test(l));
    assert.ok(opened, 'the temp file was opened');
    const fd = /= (\d+)$/.exec(opened)![1];
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const fsynced = at(new RegExp(`(fsync|fdatasync)\\(${fd}\\) += 0`));
    const renamed = at(/rename(at2?)?\(.*state\.json\.tmp".*state\.json".*= 0/);
    assert.ok(renamed > 0, 'renamed into place');
    assert.ok(
      fsynced > lines.indexOf(opened) && fsynced < renamed,
      `fsync(${fd}) of the temp file before the rename:\n${lines.join('\n')}`,
    );
    // strace -f starts each line with the thread id; the main thread's is the first line's.
    const main = lines[0]!.split(' ')[0];
    assert.notEqual(lines[fsynced]!.split(' ')[0], main, 'the fsync runs on a libuv thread, not on the event loop');
    const dirOpened = lines.slice(renamed).find((l) => new RegExp(`openat\\(.*"${dir}".*= (\\d+)$`).test(l));
    assert.ok(dirOpened, 'the directory is opened after the rename');
    const dirFd = /= (\d+)$/.exec(dirOpened)![1];
    assert.ok(
      lines.slice(renamed).some((l) => new RegExp(`fsync\\(${dirFd}\\) += 0`).test(l)),
      'and fsynced',
    );
    assert.ok(new StateStore(dir).load().live.length === 0, 'what was written reads back');
  },
);

/** A record as the file has it (decimal strings), as far as the cases below spoil it. */
interface StoredRecord {
  id?: string;
  counters: { ingress: StoredCounter; egress?: StoredCounter };
  peers: { ingress: Record<string, StoredCounter>; egress: Record<string, StoredCounter> };
}
type StoredCounter = { bytes: string; packets: string };

test('load(): one bad record is dropped and reported; the others are kept', async (t) => {
  const dir = tempDir(t);
  const store = new StateStore(dir);
  await store.save([record(11n, 'a'), record(12n, 'b')], [{ ...record(13n, 'c'), terminatedAt: 5 }]);
  const file = join(dir, 'state.json');
  const data = JSON.parse(readFileSync(file, 'utf8')) as { live: unknown[] };
  const bad: [string, (r: StoredRecord) => void, RegExp][] = [
    ['bytes not a number', (r) => (r.counters.egress!.bytes = 'lots'), /counters\.egress\.bytes: "lots"/],
    ['negative packets', (r) => (r.counters.ingress.packets = '-1'), /counters\.ingress\.packets: "-1"/],
    [
      'above u64',
      (r) => (r.peers.egress.external = { bytes: '18446744073709551616', packets: '1' }),
      /peers\.egress\.external\.bytes/,
    ],
    ['no id', (r) => delete r.id, /^id: undefined/],
    ['exponent id', (r) => (r.id = '1e3'), /^id: "1e3"/],
    ['no egress', (r) => delete r.counters.egress, /counters: needs ingress and egress/],
    ['not an object', () => {}, /not an object/],
  ];
  for (const [what, spoil, reason] of bad) {
    const copy = structuredClone(data);
    if (what === 'not an object') copy.live[0] = 7;
    else spoil(copy.live[0] as StoredRecord);
    writeFileSync(file, JSON.stringify(copy));
    const loaded = store.load();
    assert.equal(loaded.problem, undefined, what);
    assert.deepEqual(
      loaded.live.map((r) => r.relPath),
      ['b'],
      `${what}: only the bad record is dropped`,
    );
    assert.deepEqual(
      loaded.finals.map((r) => [r.relPath, r.network.egress.bytes, r.terminatedAt]),
      [['c', 113n, 5]],
      what,
    );
    assert.equal(loaded.dropped.length, 1, what);
    assert.equal(loaded.dropped[0]!.list, 'live');
    assert.equal(loaded.dropped[0]!.index, 0);
    assert.match(loaded.dropped[0]!.reason, reason, what);
  }
  // Not a state file at all: set aside whole, as before.
  writeFileSync(file, JSON.stringify({ version: 1, live: [], finals: 7 }));
  const whole = store.load();
  assert.match(String(whole.problem), /"finals" is not a list/);
  assert.deepEqual(whole.live, []);
});

test('save(): saves asked for during a write are written once, with the latest records; each resolves', async (t) => {
  const dir = tempDir(t);
  const store = new StateStore(dir);
  const saves = [1n, 2n, 3n, 4n].map((n) => store.save([record(n, `u${n}`)], []));
  await Promise.all(saves);
  assert.deepEqual(
    store.load().live.map((r) => r.relPath),
    ['u4'],
    "the last save's records are on disk",
  );
});

test('save(): a write that fails rejects its saves with the error; the next save writes again', async (t) => {
  const dir = tempDir(t);
  const store = new StateStore(dir);
  mkdirSync(join(dir, 'state.json.tmp')); // open(…, 'w') of a directory: EISDIR
  await assert.rejects(store.save([record(1n, 'a')], []), { code: 'EISDIR' });
  rmSync(join(dir, 'state.json.tmp'), { recursive: true });
  await store.save([record(2n, 'b')], []);
  assert.deepEqual(
    store.load().live.map((r) => r.relPath),
    ['b'],
  );
});
