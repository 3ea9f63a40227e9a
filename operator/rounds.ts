/**
 * What the operator does on its timer: every replica retries pods whose
 * owner was not known and gives malloc's free pages back every 5 minutes;
 * the leader loads the ledger when it is elected (retrying until the
 * custom resources can be read), then publishes the write budget and
 * writes the ledger's changed status every tick, and
 * sweeps the ledger for what the retention lets go (ledger.sweep(), beside
 * the writes: a long list does not hold them up). Losing the Lease stops
 * the writing at once.
 */
import type { Logger } from '../common/log.ts';
import { describe } from '../common/kube/api.ts';
import { trimMemory } from '../common/memory.ts';
import type { BudgetPublisher } from './budget.ts';
import type { LeaderElector } from './election.ts';
import type { Ledger } from './ledger/ledger.ts';
import type { OperatorErrorOp } from './errors.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { PodStore } from './pods.ts';

const TICK_MS = 500;
const LOAD_RETRY_MS = 5000;
/**
 * How often malloc's free pages are given back to the kernel (common/memory.ts): pod churn
 * leaves them behind (watch events, API answers), and glibc keeps them resident until then.
 */
const TRIM_MS = 5 * 60_000;

export function startRounds(o: {
  election: LeaderElector;
  ledger: Ledger;
  budget: BudgetPublisher;
  pods: PodStore;
  metrics: OperatorMetrics;
  countError: (op: OperatorErrorOp) => void;
  log: Logger;
}): { stop(): void } {
  const { election, ledger, budget, pods, metrics, countError, log } = o;

  let activating = false;
  const activate = async () => {
    if (activating) return;
    activating = true;
    try {
      while (election.isLeader && !ledger.active) {
        try {
          await ledger.activate();
        } catch (err) {
          countError('load');
          log.error(
            { err: describe(err) },
            'cannot read the podmeter custom resources (are the CRDs installed and is the operator allowed to list them?); retrying',
          );
          await new Promise((r) => setTimeout(r, LOAD_RETRY_MS));
        }
      }
    } finally {
      activating = false;
    }
  };
  election.on('started', () => void activate());
  election.on('stopped', () => {
    ledger.deactivate();
    budget.reset();
    log.info('standing by');
  });

  let ticking = false;
  let trimmedAt = Date.now();
  const tick = setInterval(() => {
    if (ticking) return;
    ticking = true;
    void (async () => {
      try {
        pods.resolvePending();
        if (Date.now() - trimmedAt >= TRIM_MS) {
          trimmedAt = Date.now();
          trimMemory(log);
        }
        if (!election.isLeader) return;
        if (!ledger.active) return void activate();
        await budget.publish().catch((err) => {
          countError('budget');
          log.warn({ err: describe(err) }, 'cannot publish the write budget; retrying');
        });
        void ledger.sweep();
        const started = performance.now();
        const writes = await ledger.reconcile();
        if (writes > 0) metrics.reconcile.observe((performance.now() - started) / 1000);
      } finally {
        ticking = false;
      }
    })();
  }, TICK_MS);

  return { stop: () => clearInterval(tick) };
}

/**
 * The leader's last status writes at shutdown, before it releases the Lease
 * (all that are due, whatever their intervals). A write that fails or is
 * left unwritten (the API server away, the budget spent) is logged: the
 * totals are not lost (the next leader computes them again from the
 * annotations and the objects' ledgers), but they stay stale until it does.
 */
export async function writeLastStatus(o: {
  ledger: Pick<Ledger, 'active' | 'dirty' | 'reconcile'>;
  countError: (op: OperatorErrorOp) => void;
  log: Logger;
}): Promise<void> {
  const { ledger, countError, log } = o;
  if (!ledger.active) return;
  try {
    const writes = await ledger.reconcile({ ignoreIntervals: true });
    const unwritten = ledger.dirty;
    if (unwritten === 0) {
      log.info({ writes }, 'last status written');
      return;
    }
    countError('write_status');
    log.error(
      { writes, unwritten },
      'last status writes at shutdown incomplete (API server away or write budget spent): those totals stay stale until the next leader writes them',
    );
  } catch (err) {
    countError('write_status');
    log.error(
      { err: describe(err) },
      'last status writes at shutdown failed: the totals stay stale until the next leader writes them',
    );
  }
}
