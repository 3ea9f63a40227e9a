/**
 * What podmeter counts: "units". In pods mode a unit is a pod-level cgroup
 * (container scopes below it count into the pod's attachment); in children
 * mode every direct child of the cgroup root is a unit (systemd services,
 * containers on a plain host).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parsePodCgroup, isKubepodsRoot } from './podPath.ts';

export const DISCOVER_MODES = ['pods', 'children'] as const;
export type DiscoverMode = (typeof DISCOVER_MODES)[number];

export interface UnitIdentity {
  kind: 'pod' | 'cgroup';
  /** Pod uid (or static pod config hash) in pods mode. */
  uid?: string;
  /** The cgroup path relative to the root, '/'-separated. */
  relPath: string;
}

export function classify(mode: DiscoverMode, relPath: string): UnitIdentity | undefined {
  if (relPath === '' || relPath.includes('\uFFFD')) return undefined;
  if (mode === 'children') return relPath.includes('/') ? undefined : { kind: 'cgroup', relPath };
  const pod = parsePodCgroup(relPath);
  return pod === undefined ? undefined : { kind: 'pod', uid: pod.uid, relPath };
}

const KUBEPODS_COMPONENT = /^(kubepods(\.slice)?|kubepods-.*|kubelet-kubepods.*)$/;

/** Depth (number of components) below the root that discovery scans outside kubepods trees. */
export const OUTSIDE_KUBEPODS_DEPTH = 3;

/**
 * Whether discovery looks inside directory `relPath` for units: in pods mode
 * the kubepods trees (found within a few levels of the root, so kind-style
 * nested roots are seen) down to the pods, never into a pod; in children mode
 * only the root.
 */
export function shouldDescend(mode: DiscoverMode, relPath: string): boolean {
  if (relPath === '') return true;
  if (mode === 'children') return false;
  const parts = relPath.split('/');
  if (parts.some((_, i) => parsePodCgroup(parts.slice(0, i + 1).join('/')) !== undefined)) return false;
  if (parts.some((p) => KUBEPODS_COMPONENT.test(p))) return true;
  return parts.length < OUTSIDE_KUBEPODS_DEPTH;
}

/** Whether `relPath` is a kubepods root or lies below one (where pods come and go). */
export function inKubepodsTree(relPath: string): boolean {
  return relPath.split('/').some((p) => KUBEPODS_COMPONENT.test(p));
}

/** `--discover auto`: pods when a kubepods tree exists near the root, else children. */
export function detectMode(root: string): DiscoverMode {
  const search = (dir: string, rel: string, depth: number): boolean => {
    if (rel !== '' && isKubepodsRoot(rel)) return true;
    if (depth >= OUTSIDE_KUBEPODS_DEPTH) return false;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return false;
    }
    return entries.some(
      (e) => e.isDirectory() && search(join(dir, e.name), rel === '' ? e.name : `${rel}/${e.name}`, depth + 1),
    );
  };
  return search(root, '', 0) ? 'pods' : 'children';
}
