/**
 * signalAndWait (test/helpers/podmeter.ts): a child that outlives the signal
 * is killed and the rejection says what it was doing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { signalAndWait } from '../helpers/podmeter.ts';

test('a child that ignores SIGTERM: killed after the bound, its threads, kernel stacks and last log lines named', async () => {
  const child = spawn('bash', ['-c', 'trap "" TERM; echo up; sleep 30 & wait'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const logs = [{ msg: 'stopping' }];
  await assert.rejects(signalAndWait(child, 'SIGTERM', 500, logs), (err: Error) => {
    assert.match(err.message, /still running 500 ms after SIGTERM; killed it \(SIGKILL\)/);
    assert.match(err.message, /thread \d+ \(bash\): S \(sleeping\), wchan \S+, stack: /);
    assert.match(err.message, /last log lines:\n\{"msg":"stopping"\}/);
    return true;
  });
  if (child.exitCode === null && child.signalCode === null) await new Promise((resolve) => child.once('exit', resolve));
  assert.equal(child.signalCode, 'SIGKILL');
});

test('a child that exits on the signal: its exit code, nothing killed', async () => {
  const child = spawn('bash', ['-c', 'trap "exit 3" TERM; echo up; sleep 30 & wait'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  assert.equal(await signalAndWait(child, 'SIGTERM', 10_000), 3);
});
