/**
 * HTTP views of the latest map inventory:
 *   /api/v1/maps    JSON (MapsView): totals, every map, and the by-name, by-owner, by-pod views
 *   /maps           HTML page with pie charts by map name and by owner
 *   /maps/chart.js  the page's script
 * Before the first inventory exists they answer 503.
 */
import type { Route } from '../../common/http/server.ts';
import { json, text } from '../../common/http/server.ts';
import type { PodNamer } from '../kube/pods.ts';
import type { MapInventory, MapProcess, PodSummary } from './inventory.ts';
import { CHART_JS, mapsPage } from './page.ts';

export interface PodNames {
  namespace?: string;
  pod?: string;
}

/** The inventory as served: plus an ISO time and pod names where the Kubernetes side knows them. */
export interface MapsView extends Omit<MapInventory, 'byPod' | 'processes'> {
  time: string;
  processes: (MapProcess & PodNames)[];
  byPod: (PodSummary & PodNames)[];
}

export function mapsView(inv: MapInventory, namer?: PodNamer): MapsView {
  const named = <T extends { uid?: string; podUid?: string }>(item: T): T & PodNames => {
    const uid = item.uid ?? item.podUid;
    const name = uid === undefined ? undefined : namer?.(uid);
    return name === undefined ? item : { ...item, ...name };
  };
  return {
    ...inv,
    time: new Date(inv.takenAt).toISOString(),
    processes: inv.processes.map(named),
    byPod: inv.byPod.map(named),
  };
}

const notYet = 'no BPF map inventory yet (the first enumeration has not finished or failed; see the agent log)\n';

export function mapRoutes(
  getInventory: () => MapInventory | undefined,
  podNamer?: () => PodNamer | undefined,
): Record<'/api/v1/maps' | '/maps' | '/maps/chart.js', Route> {
  const view = (): MapsView | undefined => {
    const inv = getInventory();
    return inv === undefined ? undefined : mapsView(inv, podNamer?.());
  };
  return {
    '/api/v1/maps': () => {
      const v = view();
      return v === undefined ? json({ error: notYet.trim() }, 503) : json(v);
    },
    '/maps': () => {
      const v = view();
      if (v === undefined) return text(notYet, 503);
      return { type: 'text/html; charset=utf-8', body: mapsPage(v) };
    },
    '/maps/chart.js': () => ({ type: 'text/javascript; charset=utf-8', body: CHART_JS }),
  };
}
