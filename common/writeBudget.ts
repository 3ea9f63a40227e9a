/**
 * A token bucket: at most `rate` writes per second on average, bursts of up
 * to `burst`. The node's annotation writes spend from it, so a node never
 * becomes a load problem for the API server however many pods change.
 * The rate can change at run time (the operator sets it cluster-wide).
 */
export class WriteBudget {
  #rate: number;
  #burst: number;
  #tokens: number;
  #at: number;

  constructor(rate: number, now = Date.now()) {
    this.#rate = rate;
    this.#burst = Math.max(1, rate);
    this.#tokens = this.#burst;
    this.#at = now;
  }

  get rate(): number {
    return this.#rate;
  }

  setRate(rate: number, now = Date.now()): void {
    this.#refill(now);
    this.#rate = rate;
    this.#burst = Math.max(1, rate);
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  /** Takes one token if there is one. */
  take(now = Date.now()): boolean {
    this.#refill(now);
    if (this.#rate <= 0 || this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  #refill(now: number): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
  }
}
