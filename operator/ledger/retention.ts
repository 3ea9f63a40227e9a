/**
 * The retention sweep's deletes (ledger.ts sweep, which paces them): usage
 * objects gone for longer than `--usage-retention` whose bytes their
 * NamespaceUsage carries. The rules are ledger.ts's header.
 */
import { FIELDS } from '../../common/contract/counts.ts';
import { parseLedger, usagePath, type UsageObject } from '../../common/contract/usage.ts';
import { describe, isStatus } from '../../common/kube/api.ts';
import { listPages } from '../../common/kube/list.ts';
import type { Book } from './book.ts';

/**
 * Lists the WorkloadUsage and NodeUsage objects page by page and deletes
 * those expired(), each with its resourceVersion (a write since then keeps
 * it), spending from the status write budget. Stops when leadership changes
 * or the budget is spent; returns the number deleted.
 */
export async function deleteExpired(book: Book): Promise<number> {
  const generation = book.generation;
  let deleted = 0;
  try {
    for (const kind of ['WorkloadUsage', 'NodeUsage'] as const) {
      for await (const page of listPages<UsageObject>(book.o.api, usagePath(kind))) {
        for (const object of page.items ?? []) {
          if (generation !== book.generation) return deleted;
          if (!expired(book, kind, object, Date.now())) continue;
          if (!book.o.budget.take()) return deleted;
          const name = object.metadata.name;
          try {
            await book.o.api.request('DELETE', usagePath(kind, name), {
              body: {
                apiVersion: 'v1',
                kind: 'DeleteOptions',
                preconditions: { resourceVersion: object.metadata.resourceVersion },
              },
              timeoutMs: 30_000,
            });
            deleted++;
            book.log.info(
              { kind, name, goneSince: object.status?.goneSince },
              'deleted: gone for longer than the retention, its bytes carried by its NamespaceUsage',
            );
          } catch (err) {
            if (isStatus(err, 404) || isStatus(err, 409)) continue; // gone already, or written since: a later sweep looks again
            book.o.onError('delete_usage');
            book.log.warn(
              { kind, name, err: describe(err) },
              'cannot delete an expired usage object; retrying at the next sweep',
            );
          }
        }
      }
    }
  } catch (err) {
    book.o.onError('read_status');
    book.log.warn(
      { err: describe(err) },
      'cannot list the usage objects for the retention; retrying at the next sweep',
    );
  }
  return deleted;
}

/**
 * Whether an object may be deleted: not in memory (nothing on its way),
 * gone since a written time older than the retention, no live pod; a
 * WorkloadUsage whose NamespaceUsage has at least its retired counts (each
 * retirement reaches both before it is marked rolled up); a NodeUsage
 * whose Node is gone, with no checkpoint, every retirement rolled up and
 * no agent final left to apply.
 */
function expired(book: Book, kind: 'WorkloadUsage' | 'NodeUsage', object: UsageObject, now: number): boolean {
  const name = object.metadata.name;
  if (book.entries.has(`${kind}/${name}`)) return false;
  const state = parseLedger(object.status);
  if (state.problems.length > 0 || state.goneSince === undefined || now - state.goneSince < book.retentionMs)
    return false;
  if (object.status?.pods !== 0) return false;
  if (kind === 'NodeUsage') {
    if (book.liveNodes.has(name) || book.nodeFinals.has(name) || state.checkpoint.size > 0 || state.spills.length > 0)
      return false;
    for (const r of state.retiring.values()) if (!r.entry.rolledUp) return false;
    return true;
  }
  const ns =
    object.spec?.namespace === undefined ? undefined : book.entries.get(`NamespaceUsage/${object.spec.namespace}`);
  if (ns === undefined || !ns.exists) return false;
  const short = FIELDS.filter((f) => ns.retired[f] < state.retired[f]);
  if (short.length > 0) {
    if (!book.problemsLogged.has(`short ${name}`)) {
      book.problemsLogged.add(`short ${name}`);
      book.log.error(
        { kind, name, fields: short },
        'a gone WorkloadUsage has retired counts its NamespaceUsage does not: kept past its retention',
      );
    }
    return false;
  }
  return true;
}
