/**
 * A node:test reporter for test/run.ts: one JSON line per finished test (not
 * per suite) with its file, name path, outcome and, for a skip or a failure,
 * why. The runner adds these up into each lane's summary; people read the
 * spec reporter beside it.
 */
import { relative } from 'node:path';

interface TestEvent {
  type: string;
  data: {
    name: string;
    nesting: number;
    file?: string;
    skip?: string | boolean;
    todo?: string | boolean;
    details?: { type?: string; error?: { message?: string; cause?: unknown } };
  };
}

export type Outcome = 'pass' | 'fail' | 'skip';
export interface Result {
  file: string;
  name: string;
  outcome: Outcome;
  reason?: string;
}

function why(error: { message?: string; cause?: unknown } | undefined): string {
  const cause = error?.cause as { message?: string } | undefined;
  return String(cause?.message ?? error?.message ?? 'failed')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 200);
}

export default async function* resultsReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  // Names of the enclosing tests, by nesting level, so a subtest reads "parent > child".
  const path: string[] = [];
  for await (const event of source) {
    if (event.type === 'test:start') {
      path.length = event.data.nesting;
      path.push(event.data.name);
      continue;
    }
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { data } = event;
    path.length = data.nesting;
    if (data.details?.type === 'suite') continue;
    const file = data.file ? relative(process.cwd(), data.file.replace(/^file:\/\//, '')) : '';
    const name = [...path, data.name].join(' > ');
    let result: Result;
    if (event.type === 'test:fail') result = { file, name, outcome: 'fail', reason: why(data.details?.error) };
    else if (data.skip !== undefined && data.skip !== false)
      result = { file, name, outcome: 'skip', reason: data.skip === true ? '' : data.skip };
    else if (data.todo !== undefined && data.todo !== false)
      result = { file, name, outcome: 'skip', reason: `todo${data.todo === true ? '' : `: ${data.todo}`}` };
    else result = { file, name, outcome: 'pass' };
    yield `${JSON.stringify(result)}\n`;
  }
}
