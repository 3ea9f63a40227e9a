// The test helpers themselves: they must never leave a cgroup, netns or pin behind.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { bpffsRoot, makeBpffsDir, sweepStaleBpffsDirs } from '../helpers/bpffs.ts';
import { cgroup2Root, cgroupProcs, makeTestCgroup, sweepStaleCgroups } from '../helpers/cgroups.ts';
import { staleTestName } from '../helpers/cleanup.ts';
import { makeNetns, sweepStaleNetns } from '../helpers/netns.ts';
import { spawnInCgroup } from '../helpers/traffic.ts';

const CGROUP2_SUPER_MAGIC = 0x63677270;

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

test('cgroup2Root is the cgroup2 mount from mountinfo', () => {
  const root = cgroup2Root();
  assert.equal(statfsSync(root).type, CGROUP2_SUPER_MAGIC);
  assert.ok(existsSync(join(root, 'cgroup.procs')));
});

test('makeTestCgroup: nested kubelet-shaped path, processes inside are killed on remove', async () => {
  const rel = 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope';
  const cg = makeTestCgroup(undefined, rel);
  assert.match(cg.relPath, new RegExp(`^podmeter-test-[a-z0-9-]+/${rel.replaceAll('.', '\\.')}$`));
  assert.equal(cg.path, join(cgroup2Root(), cg.relPath));
  assert.ok(cg.path.startsWith(`${cg.top}/`));
  const sibling = cg.child('kubepods.slice/other.slice');
  assert.equal(sibling.path, join(cg.top, 'kubepods.slice/other.slice'));
  assert.throws(() => makeTestCgroup(undefined, '../escape'), /relative/);

  // One tracked process, plus one it forked (untracked: cgroup.kill gets it).
  const child = spawnInCgroup(cg, ['sh', '-c', 'sleep 300 & echo ready; exec sleep 300']);
  const ready = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
  assert.equal(ready, 'ready');
  assert.equal(cgroupProcs(cg.path).length, 2);
  assert.ok(readFileSync(`/proc/${child.pid}/cgroup`, 'utf8').includes(`0::/${cg.relPath}\n`));

  await cg.remove();
  assert.ok(!existsSync(cg.top), 'tree removed');
  assert.ok(child.exitCode !== null || child.signalCode !== null, 'spawned process ended');
  await cg.remove(); // idempotent
});

test('makeNetns: lo up with 127.0.0.1 and ::1; removed afterwards', async () => {
  const ns = makeNetns();
  assert.ok(ns.name.startsWith('podmeter-test-'));
  assert.ok(netnsNames().includes(ns.name));
  const out = execFileSync(ns.exec[0]!, [...ns.exec.slice(1), 'ip', '-o', 'addr', 'show', 'dev', 'lo'], {
    encoding: 'utf8',
  });
  assert.match(out, /inet 127\.0\.0\.1/);
  assert.match(out, /inet6 ::1/);
  await ns.remove();
  assert.ok(!netnsNames().includes(ns.name));
});

test('SIGINT removes what the helpers created', async () => {
  const script = `
    const { makeTestCgroup } = await import(${JSON.stringify(new URL('../helpers/cgroups.ts', import.meta.url).href)});
    const { makeNetns } = await import(${JSON.stringify(new URL('../helpers/netns.ts', import.meta.url).href)});
    const { makeBpffsDir } = await import(${JSON.stringify(new URL('../helpers/bpffs.ts', import.meta.url).href)});
    const { spawnInCgroup } = await import(${JSON.stringify(new URL('../helpers/traffic.ts', import.meta.url).href)});
    const cg = makeTestCgroup(undefined, 'a/b');
    spawnInCgroup(cg, ['sleep', '300']);
    const ns = makeNetns();
    const pins = makeBpffsDir();
    console.log(JSON.stringify({ cgroup: cg.top, netns: ns.name, pins: pins.path }));
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout }).once('line', resolve));
  const made = JSON.parse(line) as { cgroup: string; netns: string; pins: string };
  assert.ok(existsSync(made.cgroup) && existsSync(made.pins) && netnsNames().includes(made.netns));
  await new Promise((r) => setTimeout(r, 200)); // let the sleep join its cgroup
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  assert.equal(await exited, 130);
  assert.ok(!existsSync(made.cgroup), 'cgroup tree removed');
  assert.ok(!existsSync(made.pins), 'bpffs dir removed');
  assert.ok(!netnsNames().includes(made.netns), 'netns removed');
});

test('makeBpffsDir: a podmeter-test- directory on bpffs', async () => {
  const dir = makeBpffsDir();
  assert.match(dir.path, /\/podmeter-test-[a-z0-9-]+$/);
  assert.equal(statfsSync(dir.path).type, 0xcafe4a11);
  await dir.remove();
  assert.ok(!existsSync(dir.path));
});

test("what a killed test left (its pid gone) is swept: cgroups, bpffs dirs, netns; a live test's never", async (t) => {
  // A pid that ran and is gone: the owner of the stale names.
  const gone = spawn('true');
  await new Promise((resolve) => gone.once('exit', resolve));
  const stale = `podmeter-test-${gone.pid!.toString(36)}-sweep1`;
  const live = `podmeter-test-${process.pid.toString(36)}-sweep2`;
  const cg = (name: string) => join(cgroup2Root(), name);
  const bpf = (name: string) => join(bpffsRoot(), name);
  t.after(() => {
    for (const name of [stale, live]) {
      spawnSync('rmdir', [join(cg(name), 'kubepods.slice'), cg(name)]);
      spawnSync('rm', ['-rf', bpf(name)]);
      spawnSync('ip', ['netns', 'del', name]);
    }
  });
  for (const name of [stale, live]) {
    mkdirSync(join(cg(name), 'kubepods.slice'), { recursive: true });
    mkdirSync(join(bpf(name), 'links'), { recursive: true });
    execFileSync('ip', ['netns', 'add', name]);
  }
  assert.equal(staleTestName(stale), true);
  assert.equal(staleTestName(live), false);
  assert.equal(
    staleTestName('podmeter-test-node-abc-def'),
    false,
    'another pattern of the prefix is not a test object',
  );

  assert.ok(sweepStaleCgroups().includes(cg(stale)));
  assert.ok(sweepStaleBpffsDirs().includes(bpf(stale)));
  assert.ok(sweepStaleNetns().includes(stale));
  assert.equal(existsSync(cg(stale)), false);
  assert.equal(existsSync(bpf(stale)), false);
  assert.ok(!netnsNames().includes(stale));
  // The live test's objects stay.
  assert.ok(existsSync(join(cg(live), 'kubepods.slice')));
  assert.ok(existsSync(join(bpf(live), 'links')));
  assert.ok(netnsNames().includes(live));
});
