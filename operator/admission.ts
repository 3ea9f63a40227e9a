/**
 * Whether the chart's admission policy guards the annotations the operator
 * bills from (helm/podmeter/templates/admission.yaml): the
 * ValidatingAdmissionPolicy and its binding named --admission-policy, the
 * binding denying. Read at start and every 5 minutes. Without them any
 * tenant who may edit a pod can write its own counts: the operator says so
 * (a warning at start and at each change) and podmeter_admission_policy_enforced
 * is 0. A cluster before Kubernetes 1.30 has no such API (404): missing too.
 * The ledger trusts a Node's finals more while the policy is enforced
 * (ledger/finals.ts), so the first read comes before leadership.
 */
import { describe, type KubeApi, type KubeObject } from '../common/kube/api.ts';
import type { Logger } from '../common/log.ts';
import type { TextMetric } from '../common/http/exposition.ts';

const BASE = '/apis/admissionregistration.k8s.io/v1';
const RECHECK_MS = 5 * 60_000;

type State = { enforced: true } | { enforced: false; why: string };

export class AdmissionCheck {
  readonly #api: KubeApi;
  readonly #name: string;
  readonly #log: Logger;
  #state: State | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: { api: KubeApi; name: string; log: Logger }) {
    this.#api = options.api;
    this.#name = options.name;
    this.#log = options.log;
  }

  /** Whether the policy and its binding were there at the last read (false before it). */
  get enforced(): boolean {
    return this.#state?.enforced === true;
  }

  /** Reads now and every 5 minutes; resolves after the first read (which never rejects). */
  start(): Promise<void> {
    const check = async () => {
      await this.check();
      this.#timer = setTimeout(() => void check(), RECHECK_MS).unref();
    };
    return check();
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  /** Reads the policy and its binding once; an API error keeps the last state. */
  async check(): Promise<void> {
    let next: State;
    try {
      next = await this.#read();
    } catch (err) {
      this.#log.warn({ err: describe(err), policy: this.#name }, 'cannot read the admission policy; will try again');
      return;
    }
    const changed = this.#state === undefined || this.#state.enforced !== next.enforced;
    this.#state = next;
    if (!changed) return;
    if (next.enforced)
      this.#log.info(
        { policy: this.#name },
        'admission policy enforced: only the agents write podmeter.io/ annotations',
      );
    else
      this.#log.warn(
        { policy: this.#name, why: next.why },
        `admission policy not enforced (${next.why}): any tenant who may edit a pod can write the counts podmeter bills from; install the chart with admission.enabled (Kubernetes 1.30+)`,
      );
  }

  async #read(): Promise<State> {
    const path = (kind: string) => `${BASE}/${kind}/${encodeURIComponent(this.#name)}`;
    const policy = await this.#api.find(path('validatingadmissionpolicies'));
    if (policy === undefined) return { enforced: false, why: `no ValidatingAdmissionPolicy ${this.#name}` };
    const binding = await this.#api.find<KubeObject & { spec?: { policyName?: string; validationActions?: string[] } }>(
      path('validatingadmissionpolicybindings'),
    );
    if (binding === undefined) return { enforced: false, why: `no ValidatingAdmissionPolicyBinding ${this.#name}` };
    if (binding.spec?.policyName !== this.#name || !(binding.spec.validationActions ?? []).includes('Deny')) {
      return { enforced: false, why: `binding ${this.#name} does not deny with policy ${this.#name}` };
    }
    return { enforced: true };
  }

  /** podmeter_admission_policy_enforced: 1, 0, or absent before the first answer. */
  metric(): TextMetric {
    return {
      name: 'podmeter_admission_policy_enforced',
      help: 'Whether the admission policy that lets only the agents write podmeter.io/ annotations is installed and denying (1) or not (0; tenants can write their own counts). Absent until first read.',
      type: 'gauge',
      samples: (emit) => {
        if (this.#state !== undefined) emit('', this.#state.enforced ? 1 : 0);
      },
    };
  }
}
