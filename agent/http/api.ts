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
  /** Network traffic: every peer class but loopback. */
  ingress: { bytes: string; packets: string };
  egress: { bytes: string; packets: string };
  /** By peer class, loopback included; classes without a packet are left out. */
  peers?: {
    ingress: Record<string, { bytes: string; packets: string }>;
    egress: Record<string, { bytes: string; packets: string }>;
  };
}

const text = (c: { bytes: bigint; packets: bigint }) => ({ bytes: String(c.bytes), packets: String(c.packets) });
const peerText = (p: Record<string, { bytes: bigint; packets: bigint }> | undefined) =>
  Object.fromEntries(Object.entries(p ?? {}).map(([k, v]) => [k, text(v)]));

export function cgroupsView(tracker: Tracker, namer?: PodNamer): { time: string; cgroups: CgroupView[] } {
  tracker.refresh();
  const cgroups = tracker.units().map((u): CgroupView => {
    const view: CgroupView = {
      id: String(u.id),
      cgroup: u.relPath,
      kind: u.kind,
      state: u.state,
      attachedAt: new Date(u.attachedAt).toISOString(),
      ingress: text(u.counters.ingress),
      egress: text(u.counters.egress),
      peers: { ingress: peerText(u.peers?.ingress), egress: peerText(u.peers?.egress) },
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
