/**
 * The count model (common/contract/counts.ts): a unit's counts, their sums
 * and text forms, and one pod's count as agents write it and the operator
 * reads it (an unsigned 64-bit decimal or refused).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  addClassTraffic,
  addUnitCounts,
  classTrafficText,
  contractCounts,
  countOf,
  countText,
  fitsStatus,
  networkTotal,
  NO_COUNTS,
  parseClassTraffic,
  parseCount,
  parseDecimal,
  unitCounts,
  unitWentBack,
  wentBack,
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

const t = (n: number) => ({ bytes: BigInt(n * 100), packets: BigInt(n) });

test('unit counts: totals leave loopback out; sums class by class; the contract carries the billed classes', () => {
  assert.deepEqual(networkTotal({ loopback: t(5), zone: t(2), external: t(1) }), t(3));
  assert.deepEqual(addClassTraffic({ zone: t(1) }, { zone: t(2), node: t(1) }), { zone: t(3), node: t(1) });
  const a = unitCounts({ ingress: { node: t(1) }, egress: { 'cross-zone': t(2), external: t(3), loopback: t(9) } });
  assert.deepEqual(a.network, { ingress: t(1), egress: t(5) });
  assert.equal(addUnitCounts(undefined, a), a);
  const twice = addUnitCounts(a, a);
  assert.deepEqual(twice.network, { ingress: t(2), egress: t(10) });
  assert.deepEqual(twice.byClass.egress.loopback, t(18));
  assert.deepEqual(contractCounts(a), {
    ingressBytes: 100n,
    egressBytes: 500n,
    ingressPackets: 1n,
    egressPackets: 5n,
    egressCrossZoneBytes: 200n,
    egressCrossRegionBytes: 0n,
    egressExternalBytes: 300n,
  });
  assert.deepEqual(contractCounts(NO_COUNTS), zero());
  assert.equal(wentBack(contractCounts(a), contractCounts(twice)), true);
  assert.equal(wentBack(contractCounts(twice), contractCounts(a)), false);
});

test('a unit went back when any class, loopback and configured ones included, lost bytes or packets', () => {
  const before = unitCounts({ ingress: { node: t(1) }, egress: { loopback: t(9), db: t(2) } });
  assert.equal(unitWentBack(before, before), false);
  assert.equal(unitWentBack(addUnitCounts(before, before), before), false);
  // A storage read as zeros while the kernel tears it down: only loopback traffic, which the totals leave out.
  const loopbackOnly = unitCounts({ ingress: {}, egress: { loopback: t(9) } });
  assert.equal(unitWentBack(NO_COUNTS, loopbackOnly), true);
  assert.equal(wentBack(contractCounts(NO_COUNTS), contractCounts(loopbackOnly)), false, 'the totals cannot see it');
  assert.equal(unitWentBack(unitCounts({ ingress: { node: t(1) }, egress: { loopback: t(9) } }), before), true);
  assert.equal(
    unitWentBack(
      unitCounts({ ingress: { node: t(1) }, egress: { loopback: t(9), db: { bytes: 200n, packets: 1n } } }),
      before,
    ),
    true,
    'packets count too',
  );
});

test('traffic by class as text and back: u64 decimals; anything else names the field', () => {
  const byClass = { external: { bytes: U64_MAX, packets: 1n }, node: t(2) };
  const text = classTrafficText(byClass);
  assert.deepEqual(text, {
    external: { bytes: '18446744073709551615', packets: '1' },
    node: { bytes: '200', packets: '2' },
  });
  assert.deepEqual(parseClassTraffic(JSON.parse(JSON.stringify(text)), 'peers'), byClass);
  assert.throws(
    () => parseClassTraffic({ node: { bytes: '01', packets: '1' } }, 'peers'),
    /^Error: peers\.node\.bytes: "01"/,
  );
  assert.throws(() => parseClassTraffic([], 'peers'), /peers: not an object/);
});
