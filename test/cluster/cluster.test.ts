import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run, startCluster } from './cluster.ts';
import type { TestCluster } from './cluster.ts';

/** True if the process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function ok(r: { stdout: string; stderr: string; code: number }, what: string): string {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout;
}

test('test cluster: pods, RBAC with service-account tokens, apiserver restart, down', async (t) => {
  let cluster: TestCluster | undefined = await startCluster();
  t.after(async () => {
    await cluster?.down();
  });
  const c = cluster;
  const ns = 'podmeter-cluster-test';

  await t.test('server answers as the built Kubernetes version', async () => {
    const v = JSON.parse(ok(await c.kubectl(['version', '-o', 'json']), 'kubectl version')) as {
      serverVersion?: { gitVersion?: string };
    };
    assert.match(v.serverVersion?.gitVersion ?? '', /^v1\.\d+\.\d+$/);
    assert.match(c.server, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  await t.test('namespace and pod with spec.nodeName', async () => {
    ok(await c.kubectl(['create', 'namespace', ns]), 'create namespace');
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', namespace: ns, labels: { app: 'web' } },
      spec: { nodeName: 'node-a', containers: [{ name: 'web', image: 'registry.invalid/web:1' }] },
    };
    ok(await c.kubectl(['create', '-f', '-'], { input: JSON.stringify(pod) }), 'create pod');
    // In the default namespace too (no default ServiceAccount exists anywhere).
    ok(
      await c.kubectl(['create', '-f', '-'], {
        input: JSON.stringify({ ...pod, metadata: { name: 'web', namespace: 'default' } }),
      }),
      'create pod in default',
    );
    const got = JSON.parse(ok(await c.kubectl(['get', 'pod', 'web', '-n', ns, '-o', 'json']), 'get pod')) as {
      metadata: { uid: string; labels: Record<string, string> };
      spec: { nodeName: string };
    };
    assert.equal(got.spec.nodeName, 'node-a');
    assert.equal(got.metadata.labels['app'], 'web');
    assert.ok(got.metadata.uid);
  });

  await t.test('service account token and RBAC', async () => {
    ok(await c.kubectl(['create', 'serviceaccount', 'reader', '-n', ns]), 'create sa');
    ok(
      await c.kubectl(['create', 'role', 'pod-reader', '-n', ns, '--verb=get,list,watch', '--resource=pods']),
      'create role',
    );
    ok(
      await c.kubectl([
        'create',
        'rolebinding',
        'reader',
        '-n',
        ns,
        '--role=pod-reader',
        `--serviceaccount=${ns}:reader`,
      ]),
      'create rolebinding',
    );
    const token = ok(await c.kubectl(['create', 'token', 'reader', '-n', ns, '--duration=10m']), 'create token').trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    const canI = async (...args: string[]): Promise<string> => {
      const r = await c.kubectl(['auth', 'can-i', ...args], { token });
      // can-i exits 1 for "no"
      assert.ok(r.code === 0 || r.code === 1, `auth can-i failed: ${r.stderr}`);
      return r.stdout.trim();
    };
    assert.equal(await canI('list', 'pods', '-n', ns), 'yes');
    assert.equal(await canI('get', 'pods/web', '-n', ns), 'yes');
    assert.equal(await canI('delete', 'pods', '-n', ns), 'no');
    assert.equal(await canI('list', 'pods', '-n', 'default'), 'no');
    assert.equal(await canI('list', 'secrets', '-n', ns), 'no');

    const who = JSON.parse(ok(await c.kubectl(['auth', 'whoami', '-o', 'json'], { token }), 'whoami')) as {
      status: { userInfo: { username: string } };
    };
    assert.equal(who.status.userInfo.username, `system:serviceaccount:${ns}:reader`);

    // The token really reads pods, and is refused what RBAC does not grant.
    ok(await c.kubectl(['get', 'pods', '-n', ns], { token }), 'get pods with token');
    const denied = await c.kubectl(['get', 'pods', '-n', 'default'], { token });
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /forbidden/i);
  });

  await t.test('apiserver stop and start keeps the data', async () => {
    await c.stopApiserver();
    const down = await c.kubectl(['get', 'ns', ns, '--request-timeout=3s']);
    assert.notEqual(down.code, 0, 'apiserver still answers after stopApiserver');
    await c.startApiserver();
    const pod = JSON.parse(ok(await c.kubectl(['get', 'pod', 'web', '-n', ns, '-o', 'json']), 'get pod')) as {
      spec: { nodeName: string };
    };
    assert.equal(pod.spec.nodeName, 'node-a');
    const token = ok(await c.kubectl(['create', 'token', 'reader', '-n', ns]), 'create token after restart').trim();
    const r = await c.kubectl(['auth', 'can-i', 'list', 'pods', '-n', ns], { token });
    assert.equal(r.stdout.trim(), 'yes');
  });

  await t.test('down removes everything', async () => {
    assert.ok(existsSync(c.dataDir));
    const etcdPid = Number(/^ETCD_PID=(\d+)$/m.exec(readFileSync(path.join(c.dataDir, 'state.env'), 'utf8'))?.[1]);
    const apiserverPid = Number(readFileSync(path.join(c.dataDir, 'kube-apiserver.pid'), 'utf8'));
    assert.ok(alive(etcdPid) && alive(apiserverPid), 'etcd and kube-apiserver run before down');
    await c.down();
    assert.ok(!existsSync(c.dataDir), `${c.dataDir} still exists`);
    assert.ok(!alive(etcdPid), 'etcd still runs after down');
    assert.ok(!alive(apiserverPid), 'kube-apiserver still runs after down');
    const r = await c.kubectl(['get', 'ns', '--request-timeout=3s']);
    assert.notEqual(r.code, 0);
    await c.down(); // idempotent
    cluster = undefined;
  });
});

test('stop_pid (lib.sh) returns once the process has exited, not when its command line first reads empty', async () => {
  // An exiting process drops its memory before it becomes a zombie: with a large heap to free,
  // its command line reads empty for a while as it still runs (`down` once returned then).
  const data = mkdtempSync('/tmp/podmeter-test-stop-pid-');
  try {
    const script = [
      `source ${path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib.sh')}`,
      'DATA=$1',
      `python3 -c 'import sys, time; b = bytearray(256 << 20); open(sys.argv[1] + ".ready", "w").close(); time.sleep(600)' "$DATA/heap" &`,
      'pid=$!',
      'for ((i = 0; i < 600; i++)); do [[ -e $DATA/heap.ready ]] || ! alive "$pid" && break; sleep 0.05; done',
      '[[ -e $DATA/heap.ready ]] || { echo "python3 did not allocate its heap (in 30 s, or it failed)" >&2; kill -KILL "$pid" 2>/dev/null; exit 1; }',
      'stop_pid heap "$pid"',
      'if alive "$pid"; then echo running; else echo exited; fi',
      'kill -KILL "$pid" 2>/dev/null; wait',
    ].join('\n');
    const r = await run('bash', ['-c', script, 'bash', data]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'exited');
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});
