/** The cluster's write budget split over nodes (operator/budget.ts) and the ConfigMap agents read (common/contract/budget.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { perNodeRate } from '../../operator/budget.ts';
import { budgetData, rateOf } from '../../common/contract/budget.ts';

test('budget: an even split that never exceeds the maximum; agents read it strictly', () => {
  for (const [max, nodes] of [
    [50, 3],
    [50, 7],
    [50, 150_000],
    [1, 3],
    [50, 0],
  ] as const) {
    const rate = perNodeRate(max, nodes);
    assert.ok(rate * Math.max(1, nodes) <= max + 1e-9 && rate > 0, `${max}/${nodes} -> ${rate}`);
    assert.equal(rateOf(budgetData(rate, max, nodes)), rate, 'what the operator writes, agents read back');
  }
  assert.equal(rateOf({ writesPerSecondPerNode: '-1' }), undefined);
  assert.equal(rateOf({ writesPerSecondPerNode: 'fast' }), undefined);
  assert.equal(rateOf({}), undefined);
});
