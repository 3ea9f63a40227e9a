/**
 * An operator upgraded without its CRDs (helm never upgrades crds/) stops at
 * start with an error naming each CRD and each field it lacks, before it
 * writes anything; with the chart's CRDs applied it starts. Against the test
 * control plane (test/cluster), no root.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { load } from 'js-yaml';
import { apply, must, operatorCluster, startOperator, type OperatorCluster } from '../helpers/operatorCluster.ts';

const CRDS = new URL('../../helm/podmeter/crds/', import.meta.url).pathname;

interface Schema {
  properties?: Record<string, Schema>;
}

/** Applies the chart's CRD of `plural` with `drop` (status fields) taken out of its schema, as an older chart had it. */
async function applyOlderCrd(oc: OperatorCluster, plural: string, drop: string[]): Promise<void> {
  const crd = load(readFileSync(`${CRDS}podmeter.io_${plural}.yaml`, 'utf8')) as {
    spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
  };
  for (const version of crd.spec.versions) {
    const status = version.schema.openAPIV3Schema.properties!.status!.properties!;
    for (const field of drop) delete status[field];
  }
  await must(
    oc.cluster.kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], { input: JSON.stringify(crd) }),
  );
}

test('an operator newer than its CRDs refuses to start, naming the CRD and the missing fields; with the CRDs applied it starts', async (t) => {
  const oc = await operatorCluster(t);
  await applyOlderCrd(oc, 'nodeusages', ['finalsAfter', 'goneSince']);
  await applyOlderCrd(oc, 'workloadusages', ['goneSince']);
  // A node: a started operator would write its NodeUsage.
  await apply(oc, [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'podmeter-test-node-a' } }]);

  await assert.rejects(startOperator(oc), (err: Error) => {
    assert.match(err.message, /exited \(1\) before ready/);
    assert.match(err.message, /CRD nodeusages\.podmeter\.io has no status\.finalsAfter, status\.goneSince/);
    assert.match(err.message, /CRD workloadusages\.podmeter\.io has no status\.goneSince/);
    assert.doesNotMatch(err.message, /namespaceusages/);
    assert.match(err.message, /apply the chart's CRDs first/);
    return true;
  });
  for (const plural of ['nodeusages', 'workloadusages', 'namespaceusages'])
    assert.equal((await must(oc.cluster.kubectl(['get', plural, '-o', 'name']))).trim(), '', `no ${plural} written`);

  for (const plural of ['nodeusages', 'workloadusages'])
    await must(
      oc.cluster.kubectl(['apply', '--server-side', '--force-conflicts', '-f', `${CRDS}podmeter.io_${plural}.yaml`]),
    );
  const op = await startOperator(oc);
  assert.ok(op.logs.some((l) => l.msg === 'operator ready'));
});
