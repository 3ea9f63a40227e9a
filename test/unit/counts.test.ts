/** One pod's count as agents write it and the operator reads it (common/contract/counts.ts): an unsigned 64-bit decimal or refused. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  countOf,
  countText,
  fitsStatus,
  parseCount,
  parseDecimal,
  TOTAL_DIGITS,
  U64_MAX,
  zero,
} from '../../common/contract/counts.ts';

test('a count is an unsigned 64-bit decimal: 0 to 2^64-1, no sign, no leading zero, no spaces', () => {
  for (const [text, value] of [
    ['0', 0n],
    ['7', 7n],
    ['9007199254740993', 2n ** 53n + 1n],
    ['18446744073709551615', U64_MAX],
    ['10000000000000000000', 10n ** 19n],
  ] as const) {
    assert.deepEqual(parseCount(text), { value }, text);
  }
  const refused: [unknown, string][] = [
    ['18446744073709551616', 'above-u64'], // 2^64
    ['99999999999999999999', 'above-u64'], // 20 digits, above 2^64-1
    ['100000000000000000000', 'above-u64'], // 21 digits
    ['1'.repeat(31), 'above-u64'], // longer than the status fields
    ['1'.repeat(30), 'above-u64'],
    ['12abc', 'not-decimal'],
    ['-5', 'not-decimal'],
    ['+5', 'not-decimal'],
    ['1e9', 'not-decimal'],
    ['08', 'not-decimal'],
    [' 8', 'not-decimal'],
    ['8 ', 'not-decimal'],
    ['', 'not-decimal'],
    ['0x10', 'not-decimal'],
    ['1.5', 'not-decimal'],
    ['١٢', 'not-decimal'], // Arabic-Indic digits
    [12, 'not-decimal'],
    [undefined, 'not-decimal'],
  ];
  for (const [text, problem] of refused) assert.deepEqual(parseCount(text), { problem }, String(text));
  assert.equal(countOf('12abc'), undefined);
  assert.equal(countOf('42'), 42n);
});

test('what an agent writes is always what the operator reads: values saturate at 2^64-1', () => {
  for (const v of [0n, 1n, 2n ** 53n + 1n, U64_MAX]) assert.equal(countOf(countText(v)), v);
  assert.equal(countText(U64_MAX + 5n), String(U64_MAX));
  assert.equal(countText(-1n), '0');
});

test("totals: up to the status fields' 30 digits, and a check before writing", () => {
  assert.equal(parseDecimal('9'.repeat(TOTAL_DIGITS)), 10n ** 30n - 1n);
  assert.equal(parseDecimal('1'.repeat(TOTAL_DIGITS + 1)), undefined);
  assert.ok(fitsStatus({ ...zero(), ingressBytes: 10n ** 30n - 1n }));
  assert.equal(fitsStatus({ ...zero(), egressBytes: 10n ** 30n }), false);
  assert.equal(fitsStatus({ ...zero(), egressPackets: -1n }), false);
  // 2^64-1 a hundred million times over (pods, resets, retirements): still a status value.
  assert.ok(fitsStatus({ ...zero(), ingressBytes: U64_MAX * 10n ** 8n }));
});
