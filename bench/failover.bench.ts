/**
 * Operator leader failover in the real kube-apiserver (test/cluster), two
 * replicas, `--rounds` times:
 * - takeover: the leader SIGKILLed; the standby takes over once the 15 s
 *   Lease has run out since the leader's last renewal (renewed every 5 s, so
 *   10-15 s after the kill);
 * - handover: the new leader SIGTERMed; it releases the Lease on its way out
 *   and the standby takes it free.
 * Each is timed from the signal to the standby's /metrics reporting
 * podmeter_operator_leader 1 (polled every 50 ms).
 *
 *   node bench/failover.bench.ts [--rounds 3]
 *
 * test/operator/failover.test.ts checks the behaviour (no takeover within the
 * Lease, a released Lease taken free, nothing counted twice); this prints how long.
 * Everything is removed afterwards, also on Ctrl-C.
 */
import { parseArgs } from 'node:util';
import { registerCleanup, runMain, sleep } from '../test/helpers/cleanup.ts';
import { operatorCluster, startOperator, type OperatorProcess } from '../test/helpers/operatorCluster.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const ROUNDS = Number(values.rounds);

/** Milliseconds from now until `op` reports itself leader. */
async function untilLeader(op: OperatorProcess, since: number): Promise<number> {
  const deadline = since + 120_000;
  while (!(await op.leader().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${op.identity} did not lead within 120 s`);
    await sleep(50);
  }
  return Date.now() - since;
}

function summary(ms: number[]): string {
  const s = [...ms].sort((x, y) => x - y);
  return `min ${(s[0]! / 1000).toFixed(1)} s, median ${(s[Math.floor(s.length / 2)]! / 1000).toFixed(1)} s, max ${(s.at(-1)! / 1000).toFixed(1)} s over ${s.length}`;
}

async function main(): Promise<void> {
  const oc = await operatorCluster({ after: (fn) => registerCleanup(fn) });
  const a = await startOperator(oc, { identity: 'podmeter-bench-op-a' });
  await untilLeader(a, Date.now());
  const b = await startOperator(oc, { identity: 'podmeter-bench-op-b' });
  const takeovers: number[] = [];
  const handovers: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // a leads, b stands by. Kill a: b takes over when the Lease runs out.
    await sleep(1000 + Math.random() * 5000); // anywhere in a's 5 s renewal period
    let at = Date.now();
    await a.kill('SIGKILL');
    takeovers.push(await untilLeader(b, at));
    await a.restart();
    // b leads, a stands by. Stop b: it releases the Lease, a takes it.
    await sleep(2000);
    at = Date.now();
    await b.kill('SIGTERM');
    handovers.push(await untilLeader(a, at));
    await b.restart();
    console.log(
      `round ${round}: takeover after SIGKILL ${(takeovers.at(-1)! / 1000).toFixed(1)} s, handover after SIGTERM ${(handovers.at(-1)! / 1000).toFixed(1)} s`,
    );
  }
  console.log('');
  console.log(`takeover after the leader's SIGKILL (Lease 15 s, renewed every 5 s): ${summary(takeovers)}`);
  console.log(`handover after the leader's SIGTERM (Lease released): ${summary(handovers)}`);
}

await runMain(main);
