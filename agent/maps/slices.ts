/**
 * Long work cut into short synchronous slices: `await slices.pause()` between
 * steps yields to the event loop once the running slice has taken
 * `budgetMs`, so a scrape or a cgroup event waits about that long at most.
 * It remembers its longest slice (wall clock: on a busy machine that
 * includes time the scheduler gave to others; bench/maps.bench.ts prints it).
 */
export class Slices {
  readonly #budgetMs: number;
  #start = performance.now();
  #longestMs = 0;

  constructor(budgetMs: number) {
    this.#budgetMs = budgetMs;
  }

  /** Yields (one macrotask) when the running slice is over budget. */
  async pause(): Promise<void> {
    const ran = performance.now() - this.#start;
    if (ran < this.#budgetMs) return;
    this.#longestMs = Math.max(this.#longestMs, ran);
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#start = performance.now();
  }

  /** The longest slice so far, the running one included. */
  get longestMs(): number {
    return Math.max(this.#longestMs, performance.now() - this.#start);
  }
}
