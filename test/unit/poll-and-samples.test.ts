// The tests' own poll (test/helpers/poll.ts) and exposition reader (test/helpers/samples.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../helpers/poll.ts';
import { sample, sampleAt, samples, sampleText, sumOf } from '../helpers/samples.ts';

const TEXT = [
  '# HELP podmeter_x_total x',
  '# TYPE podmeter_x_total counter',
  'podmeter_x_total{direction="ingress",pod="a"} 10',
  'podmeter_x_total{direction="egress",pod="a"} 18446744073709551615',
  'podmeter_x_total{direction="egress",pod="b \\"quoted\\", comma"} 3',
  'podmeter_x_total_created{direction="egress",pod="a"} 1700000000',
  'podmeter_up 1',
  'container_network_transmit_bytes_total{interface="eth0"} 512 1765000000123',
  '',
].join('\n');

test('samples: every sample of the one metric named, with its labels, value as written and timestamp', () => {
  assert.deepEqual(samples(TEXT, 'podmeter_x_total'), [
    { labels: { direction: 'ingress', pod: 'a' }, value: '10' },
    { labels: { direction: 'egress', pod: 'a' }, value: '18446744073709551615' },
    { labels: { direction: 'egress', pod: 'b \\"quoted\\", comma' }, value: '3' },
  ]);
  assert.deepEqual(samples(TEXT, 'podmeter_up'), [{ labels: {}, value: '1' }]);
  assert.deepEqual(sampleAt(TEXT, 'container_network_transmit_bytes_total', { interface: 'eth0' }), {
    labels: { interface: 'eth0' },
    value: '512',
    timestampMs: 1765000000123,
  });
  assert.deepEqual(samples(TEXT, 'podmeter_x'), [], 'a name is not a prefix');
});

test('sample, sampleText, sumOf: the labels asked for are a subset of the sample', () => {
  assert.equal(sample(TEXT, 'podmeter_x_total', { direction: 'ingress' }), 10);
  assert.equal(sampleText(TEXT, 'podmeter_x_total', { direction: 'egress', pod: 'a' }), '18446744073709551615');
  assert.equal(sample(TEXT, 'podmeter_x_total', { pod: 'c' }), undefined);
  assert.equal(sample(TEXT, 'podmeter_x_total', { direction: 'ingress', pod: '' }), undefined, 'empty is a value');
  assert.equal(sumOf(TEXT, 'podmeter_x_total', { pod: 'a' }), 10 + 2 ** 64);
  assert.equal(sumOf(TEXT, 'podmeter_x_total', { pod: 'none' }), 0);
});

test('waitFor: the first value that is not undefined; a timeout names what it waited for and what describe says', async () => {
  let calls = 0;
  assert.equal(await waitFor('the third call', () => (++calls === 3 ? 'done' : undefined)), 'done');
  assert.equal(calls, 3);
  assert.equal(await waitFor('false is a value', () => false), false);
  await assert.rejects(
    waitFor(
      'never',
      () => undefined,
      50,
      () => ({ last: 7n }),
    ),
    { message: 'timed out after 50 ms waiting for never: {"last":"7"}' },
  );
  await assert.rejects(
    waitFor(
      'never',
      () => Promise.resolve(undefined),
      50,
      () => Promise.resolve('its state'),
    ),
    { message: 'timed out after 50 ms waiting for never: its state' },
  );
});
