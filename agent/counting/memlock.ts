/**
 * RLIMIT_MEMLOCK before 5.11: the kernel charges BPF maps (and every
 * attached cgroup's storage, in whole pages) to it. An agent that adopts pins
 * loads nothing, so libbpf never raises it, and attaching stopped at ENOMEM
 * after ~70 pods (test/faults/agent-oom.test.ts on 5.10): it is raised on
 * every start, and what cannot be raised is said where it matters.
 */
import { release } from 'node:os';
import type { Logger } from '../../common/log.ts';
import { raiseMemlockLimit } from '../kernel/bpf.ts';
import { BpfError } from '../kernel/errors.ts';
import { kernelChargesMemlock } from '../maps/estimate.ts';

/** The soft limit left after raising it (undefined: unlimited) on a kernel that charges it. */
export interface MemlockLimit {
  bytes: number | undefined;
  kernel: string;
  charged: boolean;
}

/** Raises the limit as far as this process may; warns when this kernel charges attaches to what is left. */
export function raiseMemlock(log: Logger): MemlockLimit {
  const bytes = raiseMemlockLimit();
  const kernel = release();
  const charged = bytes !== undefined && kernelChargesMemlock(kernel);
  if (charged) {
    log.warn(
      { memlockBytes: bytes, kernel },
      'RLIMIT_MEMLOCK cannot be raised to unlimited (needs CAP_SYS_RESOURCE, or a higher limit from the container runtime): this kernel charges every attached cgroup to it, so attaching may fail with ENOMEM once it is used up',
    );
  }
  return { bytes, kernel, charged };
}

/**
 * Before 5.11 a memlock limit too small for the maps fails the load with
 * EPERM, which reads like a missing capability: the error says so, on its
 * first line (libbpf's log follows it).
 */
export function memlockExplained(err: unknown, limit: MemlockLimit): unknown {
  if (!(err instanceof BpfError) || err.code !== 'EPERM' || !limit.charged) return err;
  const hint = `RLIMIT_MEMLOCK is ${limit.bytes} bytes and kernel ${limit.kernel} charges BPF maps to it: give the agent CAP_SYS_RESOURCE (the chart adds it) or a higher memlock limit`;
  const [first, ...log] = err.message.split('\n');
  return new BpfError(
    {
      message: [`${first}; ${hint}`, ...log].join('\n'),
      code: err.code,
      errno: err.errno,
      syscall: err.syscall,
      path: err.path,
    },
    { cause: err },
  );
}
