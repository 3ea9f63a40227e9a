/**
 * The one error class of the kernel layer. Shaped like Node's SystemError so
 * callers branch on `.code` (an errno name such as 'EPERM', a libbpf code such
 * as 'LIBBPF_ERRNO__VERIFY', or one of podmeter's own codes from
 * common/errors.ts).
 * The native addon constructs it too (see native.ts), so a failure inside
 * libbpf and a failed check in TypeScript look the same to callers.
 */
export interface BpfErrorProps {
  message: string;
  code: string;
  /** Negative errno, as Node's SystemError has it; absent for podmeter's own codes. */
  errno?: number;
  syscall?: string;
  path?: string;
}

export class BpfError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  readonly syscall: string | undefined;
  readonly path: string | undefined;

  constructor(props: BpfErrorProps, options?: { cause?: unknown }) {
    super(props.message, options);
    this.name = 'BpfError';
    this.code = props.code;
    this.errno = props.errno;
    this.syscall = props.syscall;
    this.path = props.path;
  }
}

/** An error's errno name (ENOMEM, EPERM, E2BIG, ...), or "other": the `reason` label of attach errors, a small fixed set. */
export function errorReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]{1,15}$/.test(code) ? code : 'other';
}
