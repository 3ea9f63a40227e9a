/** Lease times as the API server wants them (operator/election.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { microTime } from '../../operator/election.ts';

test('Lease MicroTime has six fractional digits', () => {
  assert.equal(microTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), '2026-01-02T03:04:05.678000Z');
});
