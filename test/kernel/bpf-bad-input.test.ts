// Bad input: each failure is a BpfError with the right code, the path in its
// message and .path, and nothing is left half-attached.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import {
  attachCgroup,
  attachCgroupMulti,
  BpfObject,
  bpfObjectPath,
  Link,
  queryCgroup,
  StatsMap,
} from '../../agent/kernel/bpf.ts';
import { BpfError } from '../../agent/kernel/errors.ts';
import { ErrorCodes } from '../../common/errors.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { bpffsRoot, makeBpffsDir } from '../helpers/bpffs.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { randomSuffix, TEST_PREFIX } from '../helpers/cleanup.ts';

function tmpDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Asserts `fn` throws a BpfError with `code` whose message and .path name `path`. */
function assertBpfError(fn: () => unknown, code: string, path: string, extra: Partial<BpfError> = {}): BpfError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof BpfError, `expected a BpfError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.path, path);
  assert.ok(caught.message.includes(`'${path}'`), `message names the path: ${caught.message}`);
  for (const [k, v] of Object.entries(extra))
    assert.equal((caught as unknown as Record<string, unknown>)[k], v, `.${k}`);
  return caught;
}

function assertNothingAttached(cgroupPath: string): void {
  assert.deepEqual(queryCgroup(cgroupPath, 'ingress'), []);
  assert.deepEqual(queryCgroup(cgroupPath, 'egress'), []);
}

test('attaching to a path that is not a cgroup2 directory fails before the kernel is asked', (t) => {
  const cg = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  const dir = tmpDir(t);
  const file = join(dir, 'a-file');
  writeFileSync(file, '');
  const missing = join(cg.path, 'no-such-child');
  for (const program of [pm.programs.ingress, pm.programs.egress]) {
    for (const attach of [attachCgroup, attachCgroupMulti]) {
      assertBpfError(() => attach({ cgroupPath: dir, program }), ErrorCodes.notCgroup2, dir);
      assertBpfError(() => attach({ cgroupPath: file, program }), ErrorCodes.notCgroup2, file);
      assertBpfError(() => attach({ cgroupPath: missing, program }), 'ENOENT', missing);
    }
  }
  assertNothingAttached(cg.path);
  // The programs are still good: a correct attach right after works.
  const link = attachCgroup({ cgroupPath: cg.path, program: pm.programs.egress });
  assert.deepEqual(queryCgroup(cg.path, 'egress'), [pm.programs.egress.info().id]);
  link.close();
  assertNothingAttached(cg.path);
});

test('pinning into a missing directory or one not on bpffs names the directory', (t) => {
  const cg = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  const link = pm.attach(cg, ['egress']).egress!;
  const missingDir = join(bpffsRoot(), `${TEST_PREFIX}${randomSuffix()}-missing`);
  const notBpffs = tmpDir(t);
  for (const obj of [pm.programs.egress, pm.stats!, link]) {
    const e1 = assertBpfError(() => obj.pin(join(missingDir, 'x')), 'ENOENT', missingDir);
    assert.match(e1.message, /does not exist/);
    const e2 = assertBpfError(() => obj.pin(join(notBpffs, 'x')), ErrorCodes.notBpffs, notBpffs);
    assert.match(e2.message, /not on a bpffs/);
  }
  link.close();
  assertNothingAttached(cg.path);
});

test('pin onto an existing name and open of a missing pin are kernel errors with syscall and path', (t) => {
  const pins = makeBpffsDir(t);
  const pm = loadPodmeter(t);
  const taken = join(pins.path, 'taken');
  pm.stats!.pin(taken);
  assertBpfError(() => pm.programs.egress.pin(taken), 'EEXIST', taken, { syscall: 'bpf(BPF_OBJ_PIN)', errno: -17 });
  const missing = join(pins.path, 'missing');
  assertBpfError(() => StatsMap.fromPin(missing), 'ENOENT', missing, { syscall: 'bpf(BPF_OBJ_GET)', errno: -2 });
  assertBpfError(() => Link.fromPin(missing), 'ENOENT', missing, { syscall: 'bpf(BPF_OBJ_GET)' });
});

test('loading a missing or non-BPF object file names the file', (t) => {
  const missing = bpfObjectPath(`${TEST_PREFIX}missing`);
  assertBpfError(() => BpfObject.load(missing), 'ENOENT', missing);
  const notElf = join(tmpDir(t), 'not-elf.bpf.o');
  writeFileSync(notElf, 'not an ELF file\n');
  const err = assertBpfError(() => BpfObject.load(notElf), 'LIBBPF_ERRNO__FORMAT', notElf);
  assert.equal(err.syscall, 'bpf_object__open_file');
});

test('a non-root user gets a clear EPERM from BpfObject.load', async () => {
  const objectPath = bpfObjectPath('podmeter');
  const script = `
    const { BpfObject, bpfObjectPath } = await import(${JSON.stringify(new URL('../../agent/kernel/bpf.ts', import.meta.url).href)});
    try {
      BpfObject.load(bpfObjectPath('podmeter'));
      console.log(JSON.stringify({ loaded: true }));
    } catch (e) {
      console.log(JSON.stringify({ name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, message: e.message }));
    }`;
  const { stdout } = await promisify(execFile)(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script],
    { timeout: 30_000 },
  );
  const err = JSON.parse(stdout) as Record<string, unknown>;
  assert.equal(err.name, 'BpfError', stdout);
  assert.equal(err.code, 'EPERM');
  assert.equal(err.errno, -1);
  assert.equal(err.syscall, 'bpf_object__load');
  assert.equal(err.path, objectPath);
  assert.match(
    String(err.message),
    new RegExp(`^load BPF object '${objectPath.replaceAll('.', '\\.')}': Operation not permitted \\(EPERM\\)`),
  );
});
