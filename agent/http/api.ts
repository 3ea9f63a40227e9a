/** JSON views of the agent's state (/api/v1/...). Counters are decimal strings: exact beyond 2^53. */
import type { Tracker, Unit } from '../counting/tracker.ts';
import type { PodNamer } from './metrics.ts';

export interface CgroupView {
  id: string;
  cgroup: string;
  kind: 'pod' | 'cgroup';
  uid?: string;
  namespace?: string;
  pod?: string;
  state: Unit['state'];
  attachedAt: string;
  terminatedAt?: string;
  ingress: { bytes: string; packets: string };
  egress: { bytes: string; packets: string };
}

export function cgroupsView(tracker: Tracker, namer?: PodNamer): { time: string; cgroups: CgroupView[] } {
  tracker.refresh();
  const cgroups = tracker.units().map((u): CgroupView => {
    const view: CgroupView = {
      id: String(u.id),
      cgroup: u.relPath,
      kind: u.kind,
      state: u.state,
      attachedAt: new Date(u.attachedAt).toISOString(),
      ingress: { bytes: String(u.counters.ingress.bytes), packets: String(u.counters.ingress.packets) },
      egress: { bytes: String(u.counters.egress.bytes), packets: String(u.counters.egress.packets) },
    };
    if (u.uid !== undefined) {
      view.uid = u.uid;
      const name = namer?.(u.uid);
      if (name) Object.assign(view, name);
    }
    if (u.terminatedAt !== undefined) view.terminatedAt = new Date(u.terminatedAt).toISOString();
    return view;
  });
  return { time: new Date().toISOString(), cgroups };
}
