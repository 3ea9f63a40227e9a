/**
 * Paged lists: every page of a collection (500 objects per request,
 * following `continue`), so a large cluster never answers one huge
 * response. The reflector, the operator's ledger load and `podmeter top`
 * all list through here.
 */
import type { KubeApi, KubeObject, RequestOptions } from './api.ts';

export const PAGE_SIZE = 500;

/** One page as the API answers it: `items`, or `rows` for a Table. */
export type ListPage<T = KubeObject> = KubeObject & {
  items?: T[] | null;
  rows?: T[] | null;
  metadata?: { continue?: string; resourceVersion?: string };
};

/** Each page of the list at `path`, in order. */
export async function* listPages<T = KubeObject>(
  api: KubeApi,
  path: string,
  opts: Omit<RequestOptions, 'body' | 'contentType'> = {},
): AsyncGenerator<ListPage<T>> {
  let cont: string | undefined;
  do {
    const page = await api.get<ListPage<T>>(path, {
      timeoutMs: 60_000,
      ...opts,
      query: { ...opts.query, limit: PAGE_SIZE, continue: cont },
    });
    yield page;
    cont = page.metadata?.continue || undefined;
  } while (cont !== undefined);
}

/** Every object of the list at `path`. */
export async function listAll<T = KubeObject>(
  api: KubeApi,
  path: string,
  opts: Omit<RequestOptions, 'body' | 'contentType'> = {},
): Promise<T[]> {
  const out: T[] = [];
  for await (const page of listPages<T>(api, path, opts)) out.push(...(page.items ?? page.rows ?? []));
  return out;
}
