/**
 * stopOnSignals (common/log.ts), run in a child process that really gets the
 * signal: a stop that finishes exits 0; a stop stuck past its grace period
 * exits 1 with one error line naming the step it was on, instead of hanging
 * until the kubelet's SIGKILL.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';

const LOG = new URL('../../common/log.ts', import.meta.url).href;

/** Starts a child whose stop runs `stopBody` (steps reported through `step`), sends SIGTERM once it is waiting, returns its exit code and log lines. */
async function stopChild(
  stopBody: string,
  graceMs: number,
): Promise<{ code: number | null; lines: Record<string, unknown>[] }> {
  const script = `
    import { createLogger, stopOnSignals } from ${JSON.stringify(LOG)};
    const log = createLogger({ level: 'debug', format: 'json', name: 'stop-test' });
    stopOnSignals(log, async (step) => { ${stopBody} }, ${graceMs});
    setInterval(() => {}, 1000);
    log.info('waiting');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (stderr.includes('"waiting"')) child.kill('SIGTERM');
  });
  const hung = setTimeout(() => child.kill('SIGKILL'), graceMs + 10_000); // a stop that never ends fails the test, not the suite
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(hung);
  const lines = stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code, lines };
}

test('a stop that finishes exits 0 and reports its steps', async () => {
  const { code, lines } = await stopChild(
    `step('first'); await new Promise((r) => setTimeout(r, 50)); step('second');`,
    5_000,
  );
  assert.equal(code, 0);
  assert.deepEqual(
    lines.filter((l) => l.msg === 'stopping' && l.step !== undefined).map((l) => l.step),
    ['first', 'second'],
  );
  assert.ok(!lines.some((l) => String(l.msg).startsWith('stop did not finish')));
});

test('a stop stuck past the grace period exits 1 naming the step it was on', async () => {
  const { code, lines } = await stopChild(`step('the watches'); await new Promise(() => {});`, 300);
  assert.equal(code, 1);
  const stuck = lines.filter((l) => String(l.msg).startsWith('stop did not finish'));
  assert.equal(stuck.length, 1, 'logged once');
  assert.equal(stuck[0]!.step, 'the watches');
  assert.equal(stuck[0]!.level, 50, 'as an error');
});
