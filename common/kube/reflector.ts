/**
 * List-then-watch of one resource, keeping nothing itself: the consumer
 * turns each object into the few fields it needs (the operator's memory
 * must stay about 1 KiB per pod, so whole objects are never cached). The
 * one list/watch of podmeter: the agent's pod and budget watches and the
 * operator's watches all run on it.
 *
 * Lists are paged (list.ts). The watch resumes from the last seen
 * resourceVersion (bookmarks keep it fresh); on 410 Gone it lists again,
 * and the consumer's `sync` (or `relist`, page by page) sees the complete
 * new set, so objects deleted while the watch was away are noticed. Connection failures back off from
 * 1 s to 30 s; a silent connection is dropped after `idleMs`.
 */
import type { Logger } from '../log.ts';
import { sleep } from '../sleep.ts';
import {
  ACCEPT_METADATA,
  ACCEPT_METADATA_LIST,
  ACCEPT_TABLE,
  ApiError,
  describe,
  isStatus,
  retryDelay,
  type KubeApi,
  type KubeObject,
  type WatchEvent,
} from './api.ts';
import { listPages } from './list.ts';

export interface ReflectorOptions {
  api: KubeApi;
  /** Collection path, e.g. /api/v1/pods or /apis/apps/v1/replicasets. */
  path: string;
  /** What each object is: whole, its metadata only (PartialObjectMetadata), or a Table row with its metadata. */
  shape: 'object' | 'metadata' | 'table';
  query?: Record<string, string>;
  log: Logger;
  /** Every object of a complete list (first sync and every relist). Either this or `relist`. */
  sync?(this: void, items: KubeObject[], list: KubeObject): void;
  /**
   * Instead of `sync`, for large collections: a complete list page by page,
   * so its objects are never all held at once (50,000 pods' metadata would be
   * hundreds of MiB). Called as a list starts; the answer's `page` takes each
   * page as it arrives (the first carries a Table's columns), `end` follows
   * the last: objects in no page are gone. A list that fails midway is
   * started again with a new `relist()`, whose pages repeat what was applied.
   */
  relist?(): { page(items: KubeObject[], page: KubeObject): void; end(): void };
  /** One watch event (ADDED, MODIFIED, DELETED). */
  event(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: KubeObject): void;
  onError?(err: unknown): void;
  /** Test hook: shorter watch timeouts. */
  watchTimeoutSeconds?: number;
  /**
   * A watch connection that brings nothing (not even a bookmark) for this
   * long is dropped and resumed (a stalled proxy or half-open TCP connection
   * sends no reset). Default: the watch's timeoutSeconds + 30 s.
   */
  idleMs?: number;
}

const MAX_BACKOFF_MS = 30_000;

export class Reflector {
  readonly #o: ReflectorOptions;
  readonly #stop = new AbortController();
  #resourceVersion = '';
  /** Resolved by the first complete list (failures are retried, never reported through it). */
  readonly #firstSync = Promise.withResolvers<void>();
  #loop: Promise<void> | undefined;
  /** A list or watch failed and nothing has come since: logged once per outage, not per retry. */
  #failing = false;

  constructor(options: ReflectorOptions) {
    if ((options.sync === undefined) === (options.relist === undefined))
      throw new Error('Reflector: give either sync or relist');
    this.#o = options;
  }

  /** Starts the loop; resolves after the first complete list. Keeps retrying in the background either way. */
  start(): Promise<void> {
    this.#loop ??= this.#run();
    return this.#firstSync.promise;
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    let backoff = 1000;
    let needList = true;
    while (!this.#stop.signal.aborted) {
      try {
        if (needList) {
          await this.#list();
          needList = false;
        }
        await this.#watch();
        backoff = 1000; // a watch that ran and ended normally: reconnect at once
      } catch (err) {
        if (this.#stop.signal.aborted) break;
        if (isStatus(err, 410)) {
          needList = true;
          this.#o.log.info({ path: this.#o.path }, 'watch expired (410 Gone): listing again');
          continue;
        }
        this.#o.onError?.(err);
        const level = this.#failing ? 'debug' : 'warn';
        this.#failing = true;
        const wait = retryDelay(err, backoff);
        this.#o.log[level]({ path: this.#o.path, err: describe(err), retryInMs: wait }, 'list/watch failed; retrying');
        await sleep(wait, this.#stop.signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  async #list(): Promise<void> {
    const consumer = this.#o.relist?.() ?? collect(this.#o.sync!);
    let resourceVersion = '';
    const pages = listPages(this.#o.api, this.#o.path, {
      query: { ...this.#o.query, includeObject: this.#isTable ? 'Metadata' : undefined },
      accept: ACCEPT_LIST[this.#o.shape],
      signal: this.#stop.signal,
    });
    for await (const page of pages) {
      resourceVersion = page.metadata?.resourceVersion ?? '';
      consumer.page(page.items ?? page.rows ?? [], page);
    }
    this.#resourceVersion = resourceVersion; // the last page's

    this.#recovered();
    consumer.end();
    this.#firstSync.resolve(); // (again after a relist: no effect)
  }

  async #watch(): Promise<void> {
    let gone: ApiError | undefined;
    await this.#o.api.watch(
      this.#o.path,
      {
        query: {
          ...this.#o.query,
          resourceVersion: this.#resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds: this.#o.watchTimeoutSeconds ?? 240 + Math.floor(Math.random() * 60),
          includeObject: this.#isTable ? 'Metadata' : undefined,
        },
        // A watch takes the single-object form (as=PartialObjectMetadata); the List form streams nothing.
        accept: ACCEPT_WATCH[this.#o.shape],
        signal: this.#stop.signal,
        idleMs: this.#o.idleMs ?? ((this.#o.watchTimeoutSeconds ?? 300) + 30) * 1000,
      },
      (ev: WatchEvent) => {
        this.#recovered();
        if (gone) return;
        const rv = this.#isTable ? tableRowVersion(ev.object) : ev.object.metadata?.resourceVersion;
        if (ev.type === 'ERROR') {
          const status = ev.object as { code?: number; reason?: string; message?: string };
          gone = new ApiError(
            status.code ?? 500,
            status.reason ?? '',
            `watch ${this.#o.path}: ${status.message ?? 'error event'}`,
          );
          return;
        }
        if (rv) this.#resourceVersion = rv;
        if (ev.type === 'BOOKMARK') return;
        this.#o.event(ev.type, ev.object);
      },
    );
    if (gone) throw gone;
  }

  #recovered(): void {
    if (!this.#failing) return;
    this.#failing = false;
    this.#o.log.info({ path: this.#o.path }, 'list/watch works again');
  }

  get #isTable(): boolean {
    return this.#o.shape === 'table';
  }
}

const ACCEPT_LIST: Readonly<Record<ReflectorOptions['shape'], string>> = {
  object: 'application/json',
  metadata: ACCEPT_METADATA_LIST,
  table: ACCEPT_TABLE,
};
const ACCEPT_WATCH: Readonly<Record<ReflectorOptions['shape'], string>> = {
  object: 'application/json',
  metadata: ACCEPT_METADATA,
  table: ACCEPT_TABLE,
};

/** `sync` as a relist: the pages' objects gathered, handed over at the end with the first page (a Table's columns). */
function collect(sync: NonNullable<ReflectorOptions['sync']>): ReturnType<NonNullable<ReflectorOptions['relist']>> {
  const items: KubeObject[] = [];
  let first: KubeObject | undefined;
  return {
    page(pageItems, page) {
      first ??= page;
      for (const item of pageItems) items.push(item);
    },
    end: () => sync(items, first ?? {}),
  };
}

/** A watch event's Table holds one row; its object's resourceVersion is the event's. */
function tableRowVersion(table: KubeObject): string | undefined {
  const rows = (table as { rows?: { object?: KubeObject }[] }).rows;
  return rows?.[0]?.object?.metadata?.resourceVersion;
}
