/**
 * A token bucket: `burst` tokens at most, refilled at `ratePerSecond`. The
 * Kubernetes gate takes one for each review of a token it has not seen
 * allowed, so a peer spraying random tokens costs the API server at most
 * `ratePerSecond` reviews per agent after the first `burst`.
 */
export interface TokenBucketOptions {
  ratePerSecond: number;
  burst: number;
  /** The clock, in milliseconds (tests pass their own). */
  now?: () => number;
}

export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  constructor(options: TokenBucketOptions) {
    const { ratePerSecond, burst } = options;
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond))
      throw new RangeError(`token bucket: ratePerSecond must be a positive number, not ${ratePerSecond}`);
    if (!Number.isInteger(burst) || burst < 1)
      throw new RangeError(`token bucket: burst must be an integer >= 1, not ${burst}`);
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#now = options.now ?? Date.now;
    this.#tokens = burst;
    this.#at = this.#now();
  }

  /** Takes a token if there is one. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Whole seconds until the next token (for Retry-After); 0 when one is there now. */
  retryAfterSeconds(): number {
    this.#refill();
    return this.#tokens >= 1 ? 0 : Math.ceil((1 - this.#tokens) / this.#rate);
  }

  #refill(): void {
    const now = this.#now();
    // A clock that steps back adds nothing (and takes nothing away).
    const elapsed = Math.max(0, now - this.#at);
    this.#tokens = Math.min(this.#burst, this.#tokens + (elapsed * this.#rate) / 1000);
    this.#at = now;
  }
}
