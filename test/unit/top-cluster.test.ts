/** `podmeter top` in cluster mode (cli/topCluster.ts): which view the first positional picks, and sorting. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterTopTarget, renderJson, renderTable, sortRows, type TopClusterRow } from '../../cli/topCluster.ts';
import { zero } from '../../common/contract/counts.ts';

test('podmeter top: cluster mode from the first positional; sorting by total with exact bigints', () => {
  assert.equal(clusterTopTarget(['pods']), 'pods');
  assert.equal(clusterTopTarget(['--sort', 'name', 'ns']), 'namespaces');
  assert.equal(clusterTopTarget(['-A', 'wl']), 'workloads');
  assert.equal(clusterTopTarget(['--agent', 'http://127.0.0.1:9471', '--once']), undefined);
  assert.equal(clusterTopTarget(['constructor']), undefined);
  const row = (name: string, ingress: bigint): TopClusterRow => ({ ...zero(), name, ingressBytes: ingress });
  const sorted = sortRows([row('a', 2n ** 60n), row('b', 2n ** 60n + 1n), row('c', 5n)], 'total');
  assert.deepEqual(
    sorted.map((r) => r.name),
    ['b', 'a', 'c'],
    'differences below 2^-53 of the total still sort',
  );
});

test('podmeter top: CROSS-ZONE and EXTERNAL columns (egress to the billed classes), sortable; exact in JSON', () => {
  const rows: TopClusterRow[] = [
    {
      ...zero(),
      name: 'shop',
      egressBytes: 5n * 2n ** 20n,
      egressCrossZoneBytes: 2n ** 20n,
      egressExternalBytes: 3n * 2n ** 20n,
      pods: 2,
    },
    {
      ...zero(),
      name: 'batch',
      egressBytes: 6n * 2n ** 20n,
      egressCrossZoneBytes: 2n * 2n ** 20n,
      egressCrossRegionBytes: 2n ** 60n + 1n,
      pods: 1,
    },
  ];
  const text = renderTable('namespaces', rows, true);
  const [header, first] = text.split('\n');
  assert.match(header!, /^NAME\s+INGRESS\s+EGRESS\s+CROSS-ZONE\s+EXTERNAL\s+PODS\s+ENDED PODS$/);
  assert.match(first!, /^shop\s+0 B\s+5\.00 MiB\s+1\.00 MiB\s+3\.00 MiB\s+2\s+0$/);
  assert.deepEqual(
    sortRows(rows, 'cross-zone').map((r) => r.name),
    ['batch', 'shop'],
  );
  assert.deepEqual(
    sortRows(rows, 'external').map((r) => r.name),
    ['shop', 'batch'],
  );
  const json = JSON.parse(renderJson('namespaces', rows)) as { items: Record<string, unknown>[] };
  assert.equal(json.items[1]!.egressCrossRegionBytes, String(2n ** 60n + 1n));
  assert.equal(json.items[0]!.egressCrossZoneBytes, String(2n ** 20n));
  assert.equal(json.items[1]!.egressExternalBytes, '0');
});
