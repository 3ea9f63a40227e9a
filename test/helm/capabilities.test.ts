/**
 * The chart's capabilities for the agent are enough, and each one is needed.
 *
 * The agent runs as the image runs it (the files the Dockerfile's final stage
 * copies: package.json, bin/, build/, the addon, node_modules; no sources, no
 * .tools, node from PATH), started as root with exactly a given capability
 * set and no_new_privs (`setpriv --bounding-set ... --no-new-privs`, as a
 * container runtime starts a container with capabilities.add and
 * allowPrivilegeEscalation: false), with a read-only root filesystem, on a
 * read-only bind mount of a test cgroup tree (the chart mounts the host's
 * cgroup tree read-only), next to
 * two processes holding a BPF map each: one running as uid 65534 (with an
 * ambient CAP_BPF), one as root with every capability.
 *
 * With the chart's set the agent counts its pod, enumerates the node's maps
 * and finds both holders; without SYS_ADMIN, SYS_PTRACE or DAC_READ_SEARCH
 * a part of that is lost; without SYS_ADMIN, each of BPF and NET_ADMIN is
 * needed to count at all (SYS_ADMIN implies both for the kernel). SYS_RESOURCE
 * matters only before 5.11 (RLIMIT_MEMLOCK), and this machine cannot grant it:
 * see test/agent/bad-input.test.ts.
 * Needs root, setpriv and unshare (util-linux), /usr/bin/python3, cgroup v2,
 * bpffs, and a built tree (`make build`).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { PinDir } from '../../agent/counting/pins.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { afterOrSignal, randomSuffix, sleep, TEST_PREFIX, type AfterHook } from '../helpers/cleanup.ts';
import { HOLDER_SCRIPT, uniqueComm } from '../helpers/mapHolder.ts';
import { agentCapabilities, render, ROOT, toolsDir } from './chart.ts';

const ADDON = 'agent/native/build/Release/podmeter_native.node';

/** Linux capability numbers (include/uapi/linux/capability.h) of the ones this test names. */
const CAP_NUMBER: Record<string, number> = {
  DAC_READ_SEARCH: 2,
  NET_ADMIN: 12,
  SYS_PTRACE: 19,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  PERFMON: 38,
  BPF: 39,
};

/** The named capabilities in a /proc/<pid>/status mask; `only`: no other capability may be in it. */
function capsFromMask(hex: string, only = true): string[] {
  const mask = BigInt(`0x${hex}`);
  const known = Object.entries(CAP_NUMBER)
    .filter(([, n]) => (mask >> BigInt(n)) & 1n)
    .map(([name]) => name);
  const all = [...Array(64).keys()].filter((n) => (mask >> BigInt(n)) & 1n);
  if (only) assert.equal(all.length, known.length, `unexpected capabilities in ${hex}`);
  return known.sort();
}

/** The image's /opt/podmeter, assembled from this tree's build outputs as the Dockerfile's final stage copies them. */
function imageLayout(t: AfterHook): string {
  const dir = mkdtempSync(path.join(tmpdir(), `${TEST_PREFIX}image-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const opt = path.join(dir, 'opt/podmeter');
  mkdirSync(path.join(opt, path.dirname(ADDON)), { recursive: true });
  cpSync(path.join(ROOT, 'package.json'), path.join(opt, 'package.json'));
  cpSync(path.join(ROOT, 'bin'), path.join(opt, 'bin'), { recursive: true, preserveTimestamps: true });
  cpSync(path.join(ROOT, 'build'), path.join(opt, 'build'), { recursive: true, preserveTimestamps: true });
  cpSync(path.join(ROOT, ADDON), path.join(opt, ADDON));
  // The image has node_modules after `npm prune --omit=dev`; the checkout's (a superset) serve here.
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(opt, 'node_modules'));
  return opt;
}

interface MapHolder {
  comm: string;
  mapName: string;
  child: ChildProcess;
}

/** test/maps/mapholder.py holding one small array map, run as `argvPrefix` says. */
async function startHolder(t: AfterHook, argvPrefix: string[], tag: string): Promise<MapHolder> {
  const comm = uniqueComm(tag);
  const mapName = `pmt_${randomSuffix().replace(/[^a-z0-9]/g, '')}`.slice(0, 15);
  const argv = [...argvPrefix, '/usr/bin/python3', HOLDER_SCRIPT, 'serve', '--comm', comm];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  afterOrSignal(t, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const reply = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`mapholder (${argv.join(' ')}) exited ${code}: ${stderr}`)));
  });
  child.stdin.write(`${JSON.stringify({ op: 'create', name: mapName, type: 2, key: 4, value: 8, max: 16 })}\n`);
  const answer = JSON.parse(await reply) as { id?: number; error?: string };
  assert.ok(answer.id !== undefined, `mapholder: ${answer.error ?? 'no map id'}`);
  return { comm, mapName, child };
}

interface Outcome {
  /** The agent came up (else `error` says why it exited). */
  started: boolean;
  error?: string;
  /** The agent process's effective capabilities. */
  capEff: string[];
  /** Mount points the agent sees read-only, of `/` and the cgroup root. */
  readOnly: string[];
  noNewPrivs: boolean;
  /** The pod is counted (attached, no attach error). */
  counts: boolean;
  /** The map inventory works (/api/v1/maps answers). */
  inventory: boolean;
  /** The error code the agent logged for a failed attach or map enumeration (e.g. EPERM), if any. */
  attachError?: string;
  mapsError?: string;
  /** Owners the inventory gives each holder's map (its comm when found; `pinned` when nobody could be seen holding it). */
  owners: Record<string, string[]>;
}

test('the chart capabilities are enough for the agent, and each is needed', async (t) => {
  const built =
    existsSync(path.join(ROOT, 'build/js/.stamp')) &&
    existsSync(path.join(ROOT, ADDON)) &&
    existsSync(path.join(ROOT, 'build/bpf/podmeter.bpf.o'));
  if (!built) {
    t.skip('no build/js, BPF object or addon: run `make build`');
    return;
  }
  const chartCaps = agentCapabilities(await render(await toolsDir()));
  assert.deepEqual([...chartCaps].sort(), [
    'BPF',
    'DAC_READ_SEARCH',
    'NET_ADMIN',
    'SYS_ADMIN',
    'SYS_PTRACE',
    'SYS_RESOURCE',
  ]);
  // A sandbox may lack some in its own bounding set (this project's machine has
  // no SYS_RESOURCE): the agent gets the rest. SYS_RESOURCE only lifts
  // RLIMIT_MEMLOCK, which the kernel charges BPF memory to before 5.11
  // (test/agent/bad-input.test.ts, and the VM node test on Debian 11's 5.10).
  const bounding = capsFromMask(/^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!, false);
  const granted = chartCaps.filter((c) => bounding.includes(c));
  if (granted.length < chartCaps.length)
    t.diagnostic(
      `this process's bounding set lacks ${chartCaps.filter((c) => !granted.includes(c)).join(', ')}: the agent runs without it`,
    );
  const opt = imageLayout(t);

  const root = makeTestCgroup(t);
  root.child(
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${randomUUID().replaceAll('-', '_')}.slice`,
  );
  const readOnlyRoot = mkdtempSync(path.join(tmpdir(), `${TEST_PREFIX}cgroup-`));
  t.after(() => rmSync(readOnlyRoot, { recursive: true, force: true }));

  const nobody = await startHolder(
    t,
    ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all,+bpf', '--ambient-caps=+bpf'],
    'nob',
  );
  const rootHolder = await startHolder(t, [], 'root');
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };

  const runAgent = async (caps: string[]): Promise<Outcome> => {
    const bpffs = `/sys/fs/bpf/${TEST_PREFIX}${randomSuffix()}`;
    const state = mkdtempSync(path.join(tmpdir(), TEST_PREFIX));
    const bounding = ['-all', ...caps.map((c) => `+${c.toLowerCase()}`)].join(',');
    // A private mount namespace (gone with the agent) holds the chart's view:
    // the cgroup tree read-only, the state directory writable, and the root
    // filesystem read-only (readOnlyRootFilesystem); bpffs is its own mount.
    const script =
      'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && mount --bind "$3" "$3" && mount -o remount,bind,ro / && shift 3 && exec "$@"';
    const argv = [
      '-m',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      root.path,
      readOnlyRoot,
      state,
      'setpriv',
      '--no-new-privs',
      `--bounding-set=${bounding}`,
      '--inh-caps=-all',
      path.join(opt, 'bin/podmeter'),
      'agent',
      '--discover',
      'pods',
      '--cgroup-root',
      readOnlyRoot,
      '--bpffs',
      bpffs,
      '--state-dir',
      state,
      '--listen',
      '127.0.0.1:0',
      '--log-format',
      'json',
      '--interval',
      '1',
    ];
    const child = spawn('unshare', argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
    const stop = afterOrSignal(t, async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      new PinDir(bpffs).removeAll();
      rmSync(state, { recursive: true, force: true });
    });
    try {
      let stderr = '';
      // What the agent logged when an attach or an enumeration failed: the errno name, else the message.
      const failures: { attach?: string; maps?: string } = {};
      const ready = new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stderr }).on('line', (line) => {
          stderr += `${line}\n`;
          try {
            const entry = JSON.parse(line) as Record<string, unknown>;
            if (entry.msg === 'agent ready') resolve(String(entry.listen));
            const err = entry.err as { code?: string; message?: string } | undefined;
            const why = err?.code ?? err?.message ?? '';
            if (String(entry.msg).startsWith('attach failed')) failures.attach ??= why;
            if (entry.msg === 'BPF map inventory failed') failures.maps ??= why;
          } catch {
            // not a log line
          }
        });
        child.once('exit', (code) =>
          reject(new Error(`agent (caps ${caps.join(',') || 'none'}) exited ${code}:\n${stderr}`)),
        );
      });
      let listen: string;
      try {
        listen = await ready;
      } catch (err) {
        return {
          started: false,
          error: (err as Error).message,
          capEff: [],
          readOnly: [],
          noNewPrivs: false,
          counts: false,
          inventory: false,
          owners: {},
        };
      }
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const capEff = capsFromMask(/^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]!);
      const noNewPrivs = /^NoNewPrivs:\s*1$/m.test(status);
      const readOnly = readFileSync(`/proc/${child.pid}/mountinfo`, 'utf8')
        .split('\n')
        .map((line) => line.split(' '))
        .filter((f) => (f[4] === '/' || f[4] === readOnlyRoot) && f[5]?.split(',').includes('ro'))
        .map((f) => f[4]!)
        .sort();
      const url = `http://${listen}`;
      // Settle: attached (or an attach error), and an inventory (or a failed one).
      // Not settling is a failure, never a "capability needed": a slow or stuck
      // agent must not pass for one that was refused.
      const deadline = Date.now() + 60_000;
      for (;;) {
        const metrics = await (await fetch(`${url}/metrics`)).text();
        const attached = Number(/^podmeter_attached_cgroups (\S+)$/m.exec(metrics)?.[1] ?? 0);
        const attachErrors = /^podmeter_errors_total\{op="attach"(,reason="\w+")?\} [1-9]/m.test(metrics);
        const mapsErrors = /^podmeter_errors_total\{op="maps"\} [1-9]/m.test(metrics);
        const maps = await fetch(`${url}/api/v1/maps`);
        const inventory = maps.ok ? ((await maps.json()) as { maps: { name: string; owners: string[] }[] }) : undefined;
        if (!maps.ok) await maps.body?.cancel();
        const settled =
          (attached === 1 || (attachErrors && failures.attach !== undefined)) &&
          (inventory !== undefined || (mapsErrors && failures.maps !== undefined));
        if (settled) {
          const owners = Object.fromEntries(
            [nobody, rootHolder].map((h) => [h.comm, inventory?.maps.find((m) => m.name === h.mapName)?.owners ?? []]),
          );
          return {
            started: true,
            capEff,
            readOnly,
            noNewPrivs,
            counts: attached === 1 && !attachErrors,
            inventory: inventory !== undefined,
            owners,
            ...(failures.attach !== undefined ? { attachError: failures.attach } : {}),
            ...(failures.maps !== undefined ? { mapsError: failures.maps } : {}),
          };
        }
        if (Date.now() > deadline)
          throw new Error(
            `agent (caps ${caps.join(',') || 'none'}) neither attached nor failed to attach, or neither enumerated nor failed to, within 60 s:\n${stderr}`,
          );
        await sleep(100);
      }
    } finally {
      await stop();
    }
  };

  const without = (...drop: string[]) => chartCaps.filter((c) => !drop.includes(c));
  const found = (o: Outcome) =>
    Object.fromEntries(Object.entries(o.owners).map(([comm, owners]) => [comm, owners.includes(comm)]));

  // The chart's set: everything works, and the agent has exactly these capabilities.
  const full = await runAgent(chartCaps);
  assert.equal(full.started, true, full.error);
  assert.deepEqual(full.capEff, [...granted].sort());
  assert.equal(full.noNewPrivs, true);
  assert.deepEqual(full.readOnly, ['/', readOnlyRoot].sort());
  assert.equal(full.counts, true, 'counts its pod on a read-only cgroup mount, with a read-only root filesystem');
  assert.equal(full.inventory, true, 'enumerates the maps');
  assert.deepEqual([full.attachError, full.mapsError], [undefined, undefined], 'no attach or enumeration error');
  assert.deepEqual(
    found(full),
    { [nobody.comm]: true, [rootHolder.comm]: true },
    `owners: ${JSON.stringify(full.owners)}`,
  );

  // Each capability, taken away, costs something.
  const noSysAdmin = await runAgent(without('SYS_ADMIN'));
  assert.equal(noSysAdmin.counts, true);
  assert.equal(
    noSysAdmin.inventory,
    false,
    'SYS_ADMIN: the map enumeration (BPF_MAP_GET_NEXT_ID, BPF_MAP_GET_FD_BY_ID)',
  );
  assert.equal(noSysAdmin.mapsError, 'EPERM', 'the enumeration was refused by the kernel');

  const noPtrace = await runAgent(without('SYS_PTRACE'));
  assert.equal(noPtrace.inventory, true);
  assert.deepEqual(
    found(noPtrace),
    { [nobody.comm]: false, [rootHolder.comm]: false },
    'SYS_PTRACE: /proc/<pid>/fd of a process with more capabilities, or of another user',
  );
  assert.deepEqual(noPtrace.owners[rootHolder.comm], ['pinned']);

  const noDacReadSearch = await runAgent(without('DAC_READ_SEARCH'));
  assert.equal(noDacReadSearch.inventory, true);
  assert.deepEqual(
    found(noDacReadSearch),
    { [nobody.comm]: false, [rootHolder.comm]: true },
    'DAC_READ_SEARCH: /proc/<pid>/fd of another user',
  );

  // SYS_ADMIN implies BPF and NET_ADMIN for the kernel; without it, each is needed to count.
  const noBpf = await runAgent(without('SYS_ADMIN', 'BPF'));
  assert.equal(noBpf.started, false, 'BPF: loading the object (map and programs)');
  assert.match(noBpf.error ?? '', /load BPF object .*EPERM/);
  const noNetAdmin = await runAgent(without('SYS_ADMIN', 'NET_ADMIN'));
  assert.equal(noNetAdmin.started, true);
  assert.equal(noNetAdmin.counts, false, 'NET_ADMIN: loading the cgroup_skb programs to attach them');
  assert.equal(noNetAdmin.attachError, 'EPERM', 'the attach was refused by the kernel');
  t.diagnostic(
    'PERFMON is not in the set, and nothing needs it; SYS_ADMIN alone would also count (the kernel lets it stand for BPF and NET_ADMIN)',
  );
});
