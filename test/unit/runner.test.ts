/**
 * test/run.ts, make test's runner, on fixture files (test/unit/fixtures/runner/):
 * a file that hangs is ended at its bound with what it started, named with its
 * last output, and fails the lane; the closing lines count and name every
 * failed and skipped test. No root needed (the fixtures need no cluster tools).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const FIXTURES = 'test/unit/fixtures/runner';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

test('a file that hangs is ended at its bound, with the processes it started, and fails the lane; the summary counts every outcome', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-runner-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pidFile = join(dir, 'child.pid');
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    ['test/run.ts', `${FIXTURES}/hang.fixture.ts`, `${FIXTURES}/mixed.fixture.ts`],
    {
      encoding: 'utf8',
      env: { ...process.env, PODMETER_TEST_FILE_TIMEOUT: '3', RUNNER_FIXTURE_PID_FILE: pidFile },
      timeout: 120_000,
    },
  );
  const out = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 1, out);
  assert.ok(Date.now() - started < 60_000, 'the runner ended soon after the bound');
  assert.match(
    r.stdout,
    /failed: {2}test\/unit\/fixtures\/runner\/hang\.fixture\.ts: did not end within its bound of 3 s/,
  );
  assert.match(r.stdout, /\| hang fixture: waiting forever/, "the hung file's last output is shown");
  assert.match(
    r.stdout,
    /failed: {2}test\/unit\/fixtures\/runner\/mixed\.fixture\.ts > fails: Expected values to be strictly equal/,
  );
  assert.match(
    r.stdout,
    /skipped: test\/unit\/fixtures\/runner\/mixed\.fixture\.ts > has subtests > inner is skipped: needs a thing this machine lacks/,
  );
  assert.match(r.stdout, /skipped: test\/unit\/fixtures\/runner\/mixed\.fixture\.ts > is skipped: no VM here/);
  assert.match(r.stdout, /test\/run: host lane \(2 files\): FAIL in \d+ s: 3 passed, 2 failed, 2 skipped/);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.at(-1), 'test/run: 3 passed, 2 failed, 2 skipped');
  // The hung test's own child process went with its process group.
  const pid = Number(readFileSync(pidFile, 'utf8'));
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(alive(pid), false, `pid ${pid} (sleep) still runs`);
});

test('all pass: exit 0 and the totals line', () => {
  const r = spawnSync(process.execPath, ['test/run.ts', `${FIXTURES}/pass.fixture.ts`], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.equal(r.stdout.trimEnd().split('\n').at(-1), 'test/run: 1 passed, 0 failed, 0 skipped');
});
