/** `podmeter top` in cluster mode (cli/topCluster.ts): which view the first positional picks, and sorting. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterTopTarget, sortRows, type TopClusterRow } from '../../cli/topCluster.ts';

test('podmeter top: cluster mode from the first positional; sorting by total with exact bigints', () => {
  assert.equal(clusterTopTarget(['pods']), 'pods');
  assert.equal(clusterTopTarget(['--sort', 'name', 'ns']), 'namespaces');
  assert.equal(clusterTopTarget(['-A', 'wl']), 'workloads');
  assert.equal(clusterTopTarget(['--agent', 'http://127.0.0.1:9471', '--once']), undefined);
  assert.equal(clusterTopTarget(['constructor']), undefined);
  const row = (name: string, ingress: bigint): TopClusterRow => ({ name, ingressBytes: ingress, egressBytes: 0n, ingressPackets: 0n, egressPackets: 0n });
  const sorted = sortRows([row('a', 2n ** 60n), row('b', 2n ** 60n + 1n), row('c', 5n)], 'total');
  assert.deepEqual(sorted.map((r) => r.name), ['b', 'a', 'c'], 'differences below 2^-53 of the total still sort');
});
