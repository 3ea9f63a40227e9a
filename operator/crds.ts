/**
 * Whether the installed usage CRDs have every field the operator writes.
 * Helm installs the chart's crds/ once and never upgrades them, so after a
 * `helm upgrade` the API server may still serve an older schema, and it
 * silently drops the fields that schema does not have (structural pruning):
 * a NodeUsage's `finalsAfter` or a `goneSince` would never be stored, and the
 * ledger would bound or retire on state it loses at every restart. Checked
 * once at start, before anything is written: a missing CRD or field is an
 * error naming both and what to apply.
 */
import { describe, isStatus, type KubeApi } from '../common/kube/api.ts';
import type { Logger } from '../common/log.ts';
import { FIELDS } from '../common/contract/counts.ts';
import { GROUP, PLURAL, SPILL_KIND, SPILL_PLURAL, VERSION, type UsageKind } from '../common/contract/usage.ts';

interface Schema {
  properties?: Record<string, Schema>;
  items?: Schema;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
}

interface Crd {
  spec?: { versions?: { name?: string; served?: boolean; schema?: { openAPIV3Schema?: Schema } }[] };
}

const HUMAN = ['ingress', 'egress', 'egressCrossZone', 'egressCrossRegion', 'egressExternal'];
const TOTALS = [...FIELDS, ...HUMAN, 'pods', 'retiredPods', ...FIELDS.map((f) => `retired.${f}`), 'updated', 'writer'];
const LEDGER_ENTRY = ['uid', 'namespace', 'workloadKind', 'workload', ...FIELDS];
const RETIRING_ENTRY = [...LEDGER_ENTRY, 'at', 'rolledUp', 'seq'];
const MARKS = ['retiredThrough[].node', 'retiredThrough[].seq'];

type CheckedKind = UsageKind | typeof SPILL_KIND;

/** Every field path the operator writes, by kind (`[]`: each item of a list). */
export const WRITTEN_FIELDS: Readonly<Record<CheckedKind, readonly string[]>> = {
  NamespaceUsage: [...TOTALS, ...MARKS].map((f) => `status.${f}`),
  WorkloadUsage: [
    'spec.namespace',
    'spec.kind',
    'spec.name',
    ...[...TOTALS, ...MARKS, 'goneSince'].map((f) => `status.${f}`),
  ],
  NodeUsage: [
    ...TOTALS,
    'bpfMapBytes',
    'bpfMaps',
    ...LEDGER_ENTRY.map((f) => `checkpoint[].${f}`),
    ...FIELDS.map((f) => `checkpoint[].base.${f}`),
    ...RETIRING_ENTRY.map((f) => `retiring[].${f}`),
    'retiredSeq',
    'namespacesThrough',
    'workloadsThrough',
    'spills[]',
    'finalsAfter',
    'goneSince',
  ].map((f) => `status.${f}`),
  NodeRetirements: ['spec.node', ...RETIRING_ENTRY.map((f) => `spec.retiring[].${f}`)],
};

const PLURALS: Readonly<Record<CheckedKind, string>> = { ...PLURAL, [SPILL_KIND]: SPILL_PLURAL };

/** The fields of `paths` that `schema` has no place for. */
export function missingFields(schema: Schema | undefined, paths: readonly string[]): string[] {
  return paths.filter((path) => {
    let at: Schema | undefined = schema;
    for (const step of path.split('.')) {
      if (at?.['x-kubernetes-preserve-unknown-fields'] === true) return false;
      const list = step.endsWith('[]');
      at = at?.properties?.[list ? step.slice(0, -2) : step];
      if (list) at = at?.items;
      if (at === undefined) return true;
    }
    return false;
  });
}

/**
 * Reads the four CRDs and throws if one is missing or lacks a field the
 * operator writes. Without permission to read CRDs (an older chart's RBAC)
 * it warns and goes on: it cannot tell.
 */
export async function checkUsageCrds(api: KubeApi, log: Logger): Promise<void> {
  const problems: string[] = [];
  for (const kind of Object.keys(PLURALS) as CheckedKind[]) {
    const name = `${PLURALS[kind]}.${GROUP}`;
    let crd: Crd;
    try {
      crd = await api.get(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    } catch (err) {
      if (isStatus(err, 404)) {
        problems.push(`CRD ${name} is not installed`);
        continue;
      }
      if (isStatus(err, 401, 403)) {
        log.warn(
          { crd: name, err: describe(err) },
          'cannot read the usage CRDs to check that they are current (RBAC: get customresourcedefinitions); if fields are missing the API server drops them from every status',
        );
        return;
      }
      throw err;
    }
    const version = crd.spec?.versions?.find((v) => v.name === VERSION && v.served === true);
    if (version === undefined) {
      problems.push(`CRD ${name} does not serve ${VERSION}`);
      continue;
    }
    const missing = missingFields(version.schema?.openAPIV3Schema, WRITTEN_FIELDS[kind]);
    if (missing.length > 0) problems.push(`CRD ${name} has no ${missing.join(', ')}`);
  }
  if (problems.length > 0) {
    throw new Error(
      `the installed podmeter CRDs are older than this operator: ${problems.join('; ')}. ` +
        "Helm installs crds/ only once and never upgrades them: apply the chart's CRDs first " +
        "(kubectl apply --server-side -f <chart>/crds/, or the release's deploy/manifests), then restart the operator",
    );
  }
}
