/**
 * The kernel's id walk over BPF maps or programs, in short batches with
 * pauses between them, that steps over an object it may not open (an LSM's
 * refusal, a map of another user namespace) instead of failing the walk.
 */
import type { Slices } from './slices.ts';

/** Maps or programs described per native call: about 1 ms of syscalls and objects, within a slice. */
const LIST_BATCH = 8;

/** An object the walk could not open (GET_FD_BY_ID refused: an LSM, a map of another user namespace): left out of the inventory. */
export interface UnreadableObject {
  id: number;
  code: string;
}

/**
 * Refusals that leave one object out, not the whole walk: opening one object
 * by id refused. The walk itself refused (GET_NEXT_ID: the agent lacks
 * CAP_SYS_ADMIN) fails the inventory, saying so.
 */
const UNREADABLE_CODES = new Set(['EPERM', 'EACCES']);
const OPEN_BY_ID = /GET_FD_BY_ID/;
const MAX_ID = 0xffffffff;

/** The errno name of a refusal to open one object by id; undefined for any other error. */
function refusedOpen(err: unknown): string | undefined {
  const { code, syscall } = (err ?? {}) as { code?: unknown; syscall?: unknown };
  return typeof code === 'string' &&
    UNREADABLE_CODES.has(code) &&
    typeof syscall === 'string' &&
    OPEN_BY_ID.test(syscall)
    ? code
    : undefined;
}

/**
 * Every object a `list(afterId, limit)` walk gives, in batches with pauses
 * between them. The native walk stops at an object it cannot open (EPERM,
 * EACCES) without saying which: the objects before it are taken one by one,
 * then its id is found by bisection (list(a, 1) fails exactly while the
 * next id after `a` is unreadable) and the walk goes on after it; the id is
 * added to `unreadable`. (With two unreadable objects close together and
 * readable ones between them, the search may land on the second: the
 * readable ones between are then missed in this round, never the whole
 * inventory.)
 */
export async function listSliced<T extends { id: number }>(
  list: (afterId: number, limit: number) => T[],
  slices: Slices,
  unreadable: UnreadableObject[] = [],
): Promise<T[]> {
  const out: T[] = [];
  let after = 0;
  const tryList = (from: number, limit: number): T[] | string => {
    try {
      return list(from, limit);
    } catch (err) {
      const code = refusedOpen(err);
      if (code === undefined) throw err;
      return code;
    }
  };
  for (;;) {
    const batch = tryList(after, LIST_BATCH);
    if (typeof batch !== 'string') {
      out.push(...batch);
      if (batch.length < LIST_BATCH) return out;
      after = batch.at(-1)!.id;
      await slices.pause();
      continue;
    }
    // The readable ones before the refusal, one at a time.
    for (;;) {
      const one = tryList(after, 1);
      if (typeof one === 'string') break;
      if (one.length === 0) return out; // the unreadable object went away meanwhile
      out.push(one[0]!);
      after = one[0]!.id;
    }
    // Gallop from `after`, then bisect: the transition found is the first
    // one unless another unreadable object lies within the last stride.
    let lo = after;
    let hi = after;
    let code = batch;
    for (let stride = 1; hi < MAX_ID; stride *= 2) {
      hi = Math.min(after + stride, MAX_ID);
      const probe = tryList(hi, 1);
      if (typeof probe !== 'string') break;
      lo = hi;
      code = probe;
    }
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const probe = tryList(mid, 1);
      if (typeof probe === 'string') {
        lo = mid;
        code = probe;
      } else {
        hi = mid;
      }
    }
    unreadable.push({ id: hi, code });
    after = hi;
    await slices.pause();
  }
}
