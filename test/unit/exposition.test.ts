import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { Counter, Registry } from 'prom-client';
import { Exposition, labelText } from '../../common/http/exposition.ts';

test('labelText escapes backslash, quote and newline, and keeps key order', () => {
  assert.equal(labelText({}), '');
  assert.equal(labelText({ a: 'x' }), '{a="x"}');
  assert.equal(labelText({ pod: 'a\\b"c\nd', uid: '' }), '{pod="a\\\\b\\"c\\nd",uid=""}');
});

test('Exposition: the registry first, then each text metric with HELP and TYPE; counters exact beyond 2^53', async () => {
  const registry = new Registry();
  new Counter({ name: 'self_total', help: 'self', registers: [registry] }).inc(2);
  const exposition = new Exposition(registry);
  let calls = 0;
  exposition.add({
    name: 'big_total',
    help: 'a help line with \\ and\nnewline',
    type: 'counter',
    samples(emit) {
      calls++;
      emit(labelText({ direction: 'ingress' }), 2n ** 64n - 1n);
      emit('', 12.5);
      emit(labelText({ direction: 'x' }), Number.POSITIVE_INFINITY);
    },
  });
  const text = await exposition.text();
  assert.equal(calls, 1);
  assert.ok(text.startsWith('# HELP self_total self\n# TYPE self_total counter\nself_total 2\n'), text);
  assert.ok(
    text.endsWith(
      '# HELP big_total a help line with \\\\ and\\nnewline\n# TYPE big_total counter\n' +
        'big_total{direction="ingress"} 18446744073709551615\nbig_total 12.5\nbig_total{direction="x"} +Inf\n',
    ),
    text,
  );
  assert.equal(exposition.contentType, registry.contentType);
});

test('Exposition: beforeScrape runs once per scrape, before any metric, whatever the order metrics were added in', async () => {
  const exposition = new Exposition(new Registry());
  let snapshot = 0;
  const seen: string[] = [];
  const metric = (name: string) =>
    exposition.add({
      name,
      help: name,
      type: 'gauge',
      samples: (emit) => {
        seen.push(`${name}@${snapshot}`);
        emit('', snapshot);
      },
    });
  metric('packets'); // added before the hook and before the metric that used to take the snapshot
  exposition.beforeScrape(() => snapshot++);
  metric('bytes');
  const text = await exposition.text();
  assert.match(text, /^packets 1$/m);
  assert.match(text, /^bytes 1$/m);
  await exposition.text();
  assert.deepEqual(seen, ['packets@1', 'bytes@1', 'packets@2', 'bytes@2']);
});

test('Exposition: process_open_fds counts the open fds, also 100 more opened after the first scrape', async () => {
  const exposition = new Exposition();
  const openFds = async () => {
    const match = /^process_open_fds (\d+)$/m.exec(await exposition.text());
    assert.ok(match, 'process_open_fds is exported');
    return Number(match[1]);
  };
  const listed = () => readdirSync('/proc/self/fd').length - 1; // the listing's own fd left out
  assert.equal(await openFds(), listed());
  const extra = Array.from({ length: 100 }, () => openSync('/dev/null', 'r'));
  try {
    assert.equal(await openFds(), listed());
  } finally {
    for (const fd of extra) closeSync(fd);
  }
});
