/**
 * NodeRetirements objects: the overflow of a NodeUsage's intents when its
 * retirements are recorded faster than their namespaces and workloads take
 * them (a status write backlog: thousands of short-lived Jobs, each its own
 * WorkloadUsage to create and write). The NodeUsage lists its newest
 * intents itself (status.ts LISTED_INTENTS_BYTES); older ones are written,
 * SPILL_BYTES at most each, into NodeRetirements objects created before the
 * NodeUsage status that lists them in `status.spills`. An object counts only
 * while its NodeUsage lists it, so one created by a write that then failed
 * counts for nothing (it is deleted: at once, or by the sweep). Each is
 * written once and deleted once every intent in it is rolled up (after the
 * status that no longer lists it). The ledger is thus still read from the
 * objects alone: a NodeUsage plus the NodeRetirements it lists.
 */
import { describe, isStatus } from '../../common/kube/api.ts';
import { listAll } from '../../common/kube/list.ts';
import {
  GROUP,
  SPILL_KIND,
  spillPath,
  VERSION,
  type RetiringEntry,
  type SpillObject,
} from '../../common/contract/usage.ts';
import type { Book } from './book.ts';

/** An unlisted NodeRetirements object younger than this may be a write on its way (a former leader's): kept. */
const ORPHAN_AGE_MS = 10 * 60_000;

/** Creates a NodeRetirements object of node `node` holding `entries`; returns its name (`<node>.spill-xxxxx`). */
export async function createSpill(book: Book, node: string, entries: RetiringEntry[]): Promise<string> {
  const body = {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: SPILL_KIND,
    metadata: {
      generateName: `${node.slice(0, 230).replace(/[.-]+$/, '')}.spill-`,
      labels: { 'app.kubernetes.io/managed-by': 'podmeter' },
    },
    spec: { node, retiring: entries },
  };
  const created = await book.o.api.request<SpillObject>('POST', spillPath(), { body, timeoutMs: 30_000 });
  return created.metadata.name;
}

/** Deletes NodeRetirements objects no status lists (any more); one that cannot be deleted is left to the sweep. */
export async function deleteSpills(book: Book, names: Iterable<string>): Promise<void> {
  for (const name of names) {
    try {
      await book.o.api.request('DELETE', spillPath(name), { timeoutMs: 30_000 });
    } catch (err) {
      if (isStatus(err, 404)) continue;
      book.o.onError('delete_usage');
      book.log.warn({ name, err: describe(err) }, 'cannot delete a NodeRetirements object; the sweep retries');
    }
  }
}

/** The NodeRetirements objects named (a missing one is returned apart: its intents are gone). */
export async function readSpills(
  book: Book,
  names: readonly string[],
): Promise<{ objects: SpillObject[]; missing: string[] }> {
  const objects: SpillObject[] = [];
  const missing: string[] = [];
  for (const name of names) {
    const o = await book.o.api.find<SpillObject>(spillPath(name), { timeoutMs: 30_000 });
    if (o === undefined) missing.push(name);
    else objects.push(o);
  }
  return { objects, missing };
}

export function listSpills(book: Book): Promise<SpillObject[]> {
  return listAll<SpillObject>(book.o.api, spillPath());
}

/** Leader only (the sweep): deletes NodeRetirements objects their NodeUsage does not list, once old enough not to be a write on its way. */
export async function deleteOrphanSpills(book: Book, now: number): Promise<number> {
  const generation = book.generation;
  const orphans: string[] = [];
  for (const o of await listSpills(book)) {
    const node = book.entries.get(`NodeUsage/${o.spec?.node}`);
    if (node?.spills.has(o.metadata.name) === true) continue;
    const created = Date.parse(o.metadata.creationTimestamp ?? '');
    if (!(now - created > ORPHAN_AGE_MS)) continue;
    orphans.push(o.metadata.name);
  }
  if (generation !== book.generation) return 0;
  await deleteSpills(book, orphans);
  return orphans.length;
}
