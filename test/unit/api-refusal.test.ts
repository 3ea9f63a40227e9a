/**
 * Which API errors are one object's problem (common/kube/api.ts isRefusal)
 * and which are an outage: the annotator fails one pod alone for the first,
 * backs off every write for the second.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError, isRefusal } from '../../common/kube/api.ts';

test('isRefusal: a 4xx about the object, not credentials, timeouts, rate limits, 5xx or no answer', () => {
  for (const status of [400, 404, 409, 413, 415, 422])
    assert.equal(isRefusal(new ApiError(status, 'x', 'x')), true, String(status));
  for (const status of [401, 403, 408, 429, 500, 503, 504])
    assert.equal(isRefusal(new ApiError(status, 'x', 'x')), false, String(status));
  assert.equal(isRefusal(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), false);
  assert.equal(isRefusal(undefined), false);
});
