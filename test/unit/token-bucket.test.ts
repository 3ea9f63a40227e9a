/**
 * The token bucket that bounds the Kubernetes gate's reviews of tokens never
 * seen before (common/http/tokenBucket.ts), on a clock the test moves.
 * Needs: nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { TokenBucket } from '../../common/http/tokenBucket.ts';

function bucket(ratePerSecond: number, burst: number) {
  let now = 1_000_000;
  const b = new TokenBucket({ ratePerSecond, burst, now: () => now });
  return { b, advance: (ms: number) => void (now += ms) };
}

test('a full bucket gives `burst` at once, then one per 1/rate seconds', () => {
  const { b, advance } = bucket(2, 5);
  for (let i = 0; i < 5; i++) assert.equal(b.take(), true, `burst ${i}`);
  assert.equal(b.take(), false);
  assert.equal(b.retryAfterSeconds(), 1);
  advance(499);
  assert.equal(b.take(), false, 'not before 500 ms');
  advance(1);
  assert.equal(b.take(), true);
  assert.equal(b.take(), false);
  advance(60_000);
  for (let i = 0; i < 5; i++) assert.equal(b.take(), true, 'refilled to the burst, no more');
  assert.equal(b.take(), false);
});

test('Retry-After is whole seconds until the next token; 0 with one there', () => {
  const { b, advance } = bucket(0.1, 1);
  assert.equal(b.retryAfterSeconds(), 0);
  assert.equal(b.take(), true);
  assert.equal(b.retryAfterSeconds(), 10);
  advance(9_500);
  assert.equal(b.retryAfterSeconds(), 1);
  advance(500);
  assert.equal(b.retryAfterSeconds(), 0);
});

test('a clock stepping back neither adds nor removes tokens', () => {
  const { b, advance } = bucket(1, 2);
  assert.ok(b.take() && b.take());
  advance(-3_600_000);
  assert.equal(b.take(), false);
  advance(3_600_000 + 1_000);
  assert.equal(b.take(), true);
});

test('bad options are a RangeError', () => {
  for (const [rate, burst] of [
    [0, 1],
    [-1, 1],
    [Number.NaN, 1],
    [Infinity, 1],
    [1, 0],
    [1, 1.5],
  ] as const) {
    assert.throws(() => new TokenBucket({ ratePerSecond: rate, burst }), RangeError, `${rate}/${burst}`);
  }
});

test('property: over any schedule, tokens granted <= burst + rate x elapsed, and a caller who waits 1/rate s always gets one', () => {
  fc.assert(
    fc.property(
      fc.double({ min: 0.01, max: 1000, noNaN: true }),
      fc.integer({ min: 1, max: 100 }),
      fc.array(fc.integer({ min: 0, max: 5_000 }), { maxLength: 300 }),
      (rate, burst, gaps) => {
        const { b, advance } = bucket(rate, burst);
        let granted = 0;
        let elapsed = 0;
        for (const gap of gaps) {
          advance(gap);
          elapsed += gap;
          if (b.take()) granted++;
          assert.ok(granted <= burst + (rate * elapsed) / 1000 + 1e-9, `${granted} granted in ${elapsed} ms`);
        }
        advance(Math.ceil(1000 / rate));
        assert.equal(b.take(), true);
      },
    ),
  );
});
