/**
 * What a WorkloadUsage counts and how its object is named: a pod's workload
 * (operator/owners.ts resolves the owner chain) and the name, kind and object
 * name the usage objects hold for it, each valid and bounded whatever an
 * owner reference says.
 */
import { createHash } from 'node:crypto';

/** What a WorkloadUsage counts: a pod's workload (its owner chain resolved, operator/owners.ts; kind and name fitted by workloadKind and workloadName). */
export interface Workload {
  namespace: string;
  kind: string;
  name: string;
  /** `namespace/kind/name` */
  key: string;
}

/**
 * A WorkloadUsage's name: `<namespace>.<kind>.<name>` (kind lower case)
 * when that is a valid name and says which workload it is, else
 * `<namespace>.<kind>-<hash>.<name, cut>` with a hash of the workload as it
 * is (`shop.deployment-1f2e....web`). Two workloads never share a name:
 * lower-casing keeps only one spelling of each kind readable (Kubernetes'
 * workload kinds as they are spelled, other kinds as one capitalised word:
 * `Deployment`, `StatefulSet`, `Rollout`, not `DEPLOYMENT`, `Statefulset`
 * or `SparkApplication`); names that are not valid object names, or too
 * long, take the hash too; and a readable name's kind segment is an
 * identifier (workloadKind), so it never has the hyphen a hashed one has.
 */
export function workloadUsageName(w: Workload): string {
  const kind = w.kind.toLowerCase();
  const full = `${w.namespace}.${kind}.${w.name}`;
  if (readableKind(w.kind) && full.length <= 253 && DNS_SUBDOMAIN.test(full)) return full;
  const name = w.name
    .toLowerCase()
    .split('.')
    .map((label) => label.replace(/[^-a-z0-9]/g, '-').replace(/^-+|-+$/g, ''))
    .filter((label) => label !== '')
    .join('.');
  return `${w.namespace}.${kind}-${hashOf(`${w.namespace}/${w.kind}/${w.name}`)}.${name}`
    .slice(0, 253)
    .replace(/[^a-z0-9]+$/, '');
}

/** A valid object name (RFC 1123 subdomain: dot-separated labels, each alphanumeric at both ends). */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes' workload kinds, which name their WorkloadUsage objects readably exactly as spelled here. */
const BUILT_IN_KINDS: ReadonlySet<string> = new Set([
  'Pod',
  'Deployment',
  'ReplicaSet',
  'StatefulSet',
  'DaemonSet',
  'Job',
  'CronJob',
  'ReplicationController',
]);
const BUILT_IN_LOWER: ReadonlySet<string> = new Set([...BUILT_IN_KINDS].map((k) => k.toLowerCase()));

/** Whether `kind` is the one spelling of its lower-case form that names objects readably. */
function readableKind(kind: string): boolean {
  if (BUILT_IN_KINDS.has(kind)) return true;
  return /^[A-Z][a-z0-9]*$/.test(kind) && !BUILT_IN_LOWER.has(kind.toLowerCase());
}

/** The usage CRDs' limits of a workload's kind and name (spec.kind/name; checkpoint and retiring workloadKind/workload). */
export const WORKLOAD_KIND_MAX = 63;
export const WORKLOAD_NAME_MAX = 253;
const HASH_HEX = 16;

function hashOf(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, HASH_HEX);
}

/**
 * A workload kind as the usage objects hold it. A Kind is an identifier
 * (`Deployment`, `MyCRD`); an owner reference can name anything (anyone who
 * may create a pod writes it), so any other value becomes one: its letters
 * and digits, cut, and a hash of the whole value (so two never collide and
 * one always maps to the same). A kind with a dot would also make
 * WorkloadUsage names ambiguous.
 */
export function workloadKind(kind: string): string {
  if (kind.length <= WORKLOAD_KIND_MAX && /^[A-Za-z][A-Za-z0-9]*$/.test(kind)) return kind;
  const letters = kind.replace(/[^A-Za-z0-9]/g, '').replace(/^[0-9]+/, '');
  return `${letters === '' ? 'K' : letters.slice(0, WORKLOAD_KIND_MAX - HASH_HEX)}${hashOf(kind)}`;
}

/** A workload name as the usage objects hold it: a longer one is cut and given a hash of the whole value. */
export function workloadName(name: string): string {
  if (name.length <= WORKLOAD_NAME_MAX) return name;
  return `${name.slice(0, WORKLOAD_NAME_MAX - HASH_HEX - 1)}-${hashOf(name)}`;
}
