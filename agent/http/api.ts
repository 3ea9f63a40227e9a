/** JSON views of the agent's state (/api/v1/...). Counters are decimal strings: exact beyond 2^53. */
import type { Tracker } from '../counting/tracker.ts';
import type { Unit } from '../counting/unit.ts';
import { classTrafficText, trafficText, type TrafficText } from '../../common/contract/counts.ts';
import type { PodNamer } from '../kube/pods.ts';

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
  /** Network traffic: every peer class but loopback. */
  ingress: TrafficText;
  egress: TrafficText;
  /** By peer class, loopback included; classes without a packet are left out. */
  peers?: { ingress: Record<string, TrafficText>; egress: Record<string, TrafficText> };
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
      ingress: trafficText(u.network.ingress),
      egress: trafficText(u.network.egress),
      peers: { ingress: classTrafficText(u.byClass.ingress), egress: classTrafficText(u.byClass.egress) },
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
