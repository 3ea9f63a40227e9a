/**
 * Recognises kubelet-made pod cgroups from their path (relative to the cgroup2
 * root, '/'-separated). podmeter attaches its counters at the pod level, so it
 * must tell a pod cgroup apart from the QoS slices above it, the container
 * scopes below it, and everything else on the host.
 *
 * The kubelet builds two shapes, one per cgroup driver:
 *   systemd:  <root>.slice/<root>-<qos>.slice/<root>-<qos>-pod<uid_with_underscores>.slice
 *   cgroupfs: kubepods/<qos>/pod<uid>
 * Guaranteed pods skip the QoS level. <root> is `kubepods`, or `<x>-kubepods`
 * when the kubelet runs with a --cgroup-root (kind: `kubelet-kubepods`). Any
 * prefix may come before the root (kind node containers seen from the host).
 *
 * Paths arrive as strings decoded from raw bytes (latin1 or with U+FFFD), so
 * every check is a strict character test and nothing here throws.
 */

export type QosClass = 'guaranteed' | 'burstable' | 'besteffort';
export type CgroupDriver = 'systemd' | 'cgroupfs';

export interface PodCgroup {
  kind: 'pod';
  /** Pod UID, dashed and lower case; a static pod's 32-hex config hash as is. */
  uid: string;
  qos: QosClass;
  driver: CgroupDriver;
  /** Normalised path of the pod-level cgroup (no leading or trailing '/'). */
  path: string;
}

/** The pod-level cgroup itself; container scopes and anything else: undefined. */
export function parsePodCgroup(relPath: string): PodCgroup | undefined {
  const found = findPod(relPath);
  return found && found.rest.length === 0 ? found.pod : undefined;
}

/**
 * The pod whose cgroup `relPath` is, or lies under through a container scope
 * (the cgroup a process of that pod sits in). Other children of a pod cgroup
 * (cri-o's `crio-conmon-*.scope`, stray units) run runtime helpers, not the
 * pod's workload, so they map to nothing.
 */
export function podCgroupOf(relPath: string): PodCgroup | undefined {
  const found = findPod(relPath);
  if (!found) return undefined;
  const [child] = found.rest;
  if (child === undefined) return found.pod;
  // Below the container scope any name is fine: a container may build its own tree.
  return isContainerName(child, found.pod.driver) ? found.pod : undefined;
}

/** True for the directory where the kubelet's pod tree starts: `kubepods.slice`, `kubepods`, `kubelet.slice/kubelet-kubepods.slice`, ... */
export function isKubepodsRoot(relPath: string): boolean {
  const parts = splitPath(relPath);
  if (!parts) return false;
  return firstRootIndex(parts) === parts.length - 1;
}

// ---------------------------------------------------------------------------

interface KubepodsRoot {
  driver: CgroupDriver;
  /** systemd only: the root slice's unit name without `.slice`; every unit below starts with it. */
  unitPrefix: string;
}

interface FoundPod {
  pod: PodCgroup;
  /** Path components below the pod cgroup. */
  rest: string[];
}

function findPod(relPath: string): FoundPod | undefined {
  const parts = splitPath(relPath);
  if (!parts) return undefined;
  // The outermost root wins: a kind cluster inside a pod is that outer pod's business.
  const rootIndex = firstRootIndex(parts);
  if (rootIndex < 0) return undefined;
  const root = kubepodsRootOf(parts[rootIndex] ?? '');
  if (!root) return undefined;
  const below = parts.slice(rootIndex + 1);
  const match = root.driver === 'systemd' ? matchSystemdPod(root, below) : matchCgroupfsPod(below);
  if (!match) return undefined;
  const podDepth = rootIndex + 1 + match.depth;
  return {
    pod: { kind: 'pod', uid: match.uid, qos: match.qos, driver: root.driver, path: parts.slice(0, podDepth).join('/') },
    rest: parts.slice(podDepth),
  };
}

/**
 * Accepts a leading '/' and a trailing '/', nothing else unusual: an empty
 * component, '.' or '..' means the path was not built from a real directory walk.
 */
function splitPath(relPath: string): string[] | undefined {
  if (typeof relPath !== 'string') return undefined;
  const trimmed = relPath.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '') return undefined;
  const parts = trimmed.split('/');
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..' || part.includes('\0')) return undefined;
  }
  return parts;
}

function firstRootIndex(parts: string[]): number {
  return parts.findIndex((part) => kubepodsRootOf(part) !== undefined);
}

/** `kubepods` (cgroupfs), `kubepods.slice` or `<prefix>-kubepods.slice` (systemd). */
function kubepodsRootOf(name: string): KubepodsRoot | undefined {
  if (name === 'kubepods') return { driver: 'cgroupfs', unitPrefix: '' };
  const unit = stripSuffix(name, '.slice');
  if (unit === undefined) return undefined;
  if (unit === 'kubepods') return { driver: 'systemd', unitPrefix: unit };
  const prefix = stripSuffix(unit, '-kubepods');
  return prefix !== undefined && isSystemdUnitPrefix(prefix) ? { driver: 'systemd', unitPrefix: unit } : undefined;
}

interface PodMatch {
  uid: string;
  qos: QosClass;
  /** How many components below the root make up the pod path (1 for guaranteed, 2 otherwise). */
  depth: number;
}

/** `<p>-pod<uid>.slice` (guaranteed) or `<p>-<qos>.slice/<p>-<qos>-pod<uid>.slice`. */
function matchSystemdPod(root: KubepodsRoot, below: string[]): PodMatch | undefined {
  const [first, second] = below;
  if (first === undefined) return undefined;
  const guaranteedUid = systemdPodUid(first, root.unitPrefix);
  if (guaranteedUid !== undefined) return { uid: guaranteedUid, qos: 'guaranteed', depth: 1 };
  const qos = sharedQosOf(stripSuffix(first, '.slice'), `${root.unitPrefix}-`);
  if (qos === undefined || second === undefined) return undefined;
  const uid = systemdPodUid(second, `${root.unitPrefix}-${qos}`);
  return uid === undefined ? undefined : { uid, qos, depth: 2 };
}

/** `pod<uid>` (guaranteed) or `<qos>/pod<uid>`. */
function matchCgroupfsPod(below: string[]): PodMatch | undefined {
  const [first, second] = below;
  if (first === undefined) return undefined;
  const guaranteedUid = cgroupfsPodUid(first);
  if (guaranteedUid !== undefined) return { uid: guaranteedUid, qos: 'guaranteed', depth: 1 };
  const qos = sharedQosOf(first, '');
  if (qos === undefined || second === undefined) return undefined;
  const uid = cgroupfsPodUid(second);
  return uid === undefined ? undefined : { uid, qos, depth: 2 };
}

/** Burstable and BestEffort pods get a QoS level; Guaranteed pods sit directly under the root. */
function sharedQosOf(name: string | undefined, prefix: string): 'burstable' | 'besteffort' | undefined {
  if (name === `${prefix}burstable`) return 'burstable';
  if (name === `${prefix}besteffort`) return 'besteffort';
  return undefined;
}

/** systemd escapes '-' (its hierarchy separator) in the UID as '_'. */
function systemdPodUid(name: string, unitPrefix: string): string | undefined {
  const unit = stripSuffix(name, '.slice');
  const raw = unit === undefined ? undefined : stripPrefix(unit, `${unitPrefix}-pod`);
  return raw === undefined ? undefined : normaliseUid(raw, '_');
}

function cgroupfsPodUid(name: string): string | undefined {
  const raw = stripPrefix(name, 'pod');
  return raw === undefined ? undefined : normaliseUid(raw, '-');
}

const HEX = /^[0-9a-fA-F]+$/;
const UUID_GROUP_LENGTHS = [8, 4, 4, 4, 12];

/**
 * A UUID written with `separator` between its groups becomes the dashed lower
 * case form the API server uses; a static pod's 32-hex config hash (which the
 * mirror pod carries in `kubernetes.io/config.hash`) is kept, lower cased.
 */
function normaliseUid(raw: string, separator: '_' | '-'): string | undefined {
  if (raw.length === 32 && HEX.test(raw)) return raw.toLowerCase();
  const groups = raw.split(separator);
  if (groups.length !== UUID_GROUP_LENGTHS.length) return undefined;
  const valid = groups.every((group, i) => group.length === UUID_GROUP_LENGTHS[i] && HEX.test(group));
  return valid ? groups.join('-').toLowerCase() : undefined;
}

const CONTAINER_ID = /^[0-9a-f]{64}$/;
/** Scope name prefixes of the runtimes the kubelet drives with the systemd driver. */
const SYSTEMD_CONTAINER_PREFIXES = ['cri-containerd-', 'crio-', 'docker-'];

/** `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` (systemd); `<id>` or `crio-<id>` (cgroupfs). */
function isContainerName(name: string, driver: CgroupDriver): boolean {
  if (driver === 'cgroupfs') return CONTAINER_ID.test(stripPrefix(name, 'crio-') ?? name);
  const unit = stripSuffix(name, '.scope');
  if (unit === undefined) return false;
  // `crio-conmon-<id>` fails here too: after `crio-` comes `conmon-...`, not a 64-hex id.
  return SYSTEMD_CONTAINER_PREFIXES.some((prefix) => CONTAINER_ID.test(stripPrefix(unit, prefix) ?? ''));
}

/** systemd unit names allow ASCII letters, digits and `:_.\-`; '-' separates slice levels. */
function isSystemdUnitPrefix(prefix: string): boolean {
  return /^[A-Za-z0-9:_.\\]+(-[A-Za-z0-9:_.\\]+)*$/.test(prefix);
}

function stripSuffix(text: string, suffix: string): string | undefined {
  return text.length > suffix.length && text.endsWith(suffix) ? text.slice(0, -suffix.length) : undefined;
}

function stripPrefix(text: string, prefix: string): string | undefined {
  return text.length > prefix.length && text.startsWith(prefix) ? text.slice(prefix.length) : undefined;
}
