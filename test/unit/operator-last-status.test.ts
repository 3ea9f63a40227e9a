/**
 * The operator's last status writes at shutdown (issue 23): a failure, or
 * objects left unwritten, is logged as an error and counted in
 * podmeter_operator_errors_total{op="write_status"}; before, the stop
 * swallowed both. The ledger is a stand-in here (what it does with the API
 * server is tested in test/operator and test/faults/operator.test.ts).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { writeLastStatus } from '../../operator/rounds.ts';

function capture() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n'))
        if (line !== '') lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

test('a last status write that throws at shutdown is logged and counted', async () => {
  const { log, lines } = capture();
  const errors: string[] = [];
  const ledger = {
    active: true,
    dirty: 3,
    reconcile: async () =>
      Promise.reject(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' })),
  };
  await writeLastStatus({ ledger, countError: (op) => errors.push(op), log });
  assert.deepEqual(errors, ['write_status']);
  const line = lines.find((l) => /last status writes at shutdown failed/.test(l.msg));
  assert.ok(line, JSON.stringify(lines));
  assert.equal(line.level, 50, 'an error');
  assert.match(JSON.stringify(line), /ECONNREFUSED/, 'with the cause');
});

test('objects left unwritten at shutdown (API server away, budget spent) are logged with their number', async () => {
  const { log, lines } = capture();
  const errors: string[] = [];
  const ledger = { active: true, dirty: 5, reconcile: () => Promise.resolve(2) };
  await writeLastStatus({ ledger, countError: (op) => errors.push(op), log });
  assert.deepEqual(errors, ['write_status']);
  const line = lines.find((l) => /incomplete/.test(l.msg));
  assert.equal(line?.unwritten, 5);
  assert.equal(line?.writes, 2);
});

test('all written: one info line; a standby writes nothing and says nothing', async () => {
  const { log, lines } = capture();
  const errors: string[] = [];
  let dirty = 4;
  await writeLastStatus({
    ledger: {
      active: true,
      get dirty() {
        return dirty;
      },
      reconcile: () => ((dirty = 0), Promise.resolve(4)),
    },
    countError: (op) => errors.push(op),
    log,
  });
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg, l.writes]),
    [[30, 'last status written', 4]],
  );
  let called = false;
  await writeLastStatus({
    ledger: { active: false, dirty: 9, reconcile: () => ((called = true), Promise.resolve(0)) },
    countError: (op) => errors.push(op),
    log,
  });
  assert.equal(called, false);
  assert.deepEqual(errors, []);
  assert.equal(lines.length, 1);
});
