/**
 * A node:test reporter for test/node/kernels: one line per test file as it
 * finishes, and one per failed test, so the host can print per-file results
 * while the guest runs and still has them if the run is cut short.
 *
 *   file <path> ok|FAIL tests=N passed=N failed=N skipped=N seconds=S
 *   fail <path> :: <test name> :: <first line of the error>
 *   done ok|FAIL tests=N passed=N failed=N skipped=N
 *
 * Paths are relative to the working directory. seconds is the file's wall
 * time (from the previous file's end: it includes the file's Node startup).
 */
import { relative } from 'node:path';

interface Counts {
  tests: number;
  passed: number;
  failed: number;
  skipped: number;
  cancelled: number;
  todo: number;
}
interface TestEvent {
  type: string;
  data: {
    name?: string;
    file?: string;
    success?: boolean;
    counts?: Counts;
    details?: { type?: string; error?: { message?: string; cause?: unknown } };
  };
}

function counted(c: Counts): string {
  return `tests=${c.tests} passed=${c.passed} failed=${c.failed + c.cancelled} skipped=${c.skipped + c.todo}`;
}

function firstLine(error: { message?: string; cause?: unknown } | undefined): string {
  const cause = error?.cause;
  const text =
    cause instanceof Error ? cause.message : typeof cause === 'string' ? cause : (error?.message ?? 'failed');
  return text.split('\n', 1)[0] ?? '';
}

export default async function* kernelsReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  let since = Date.now();
  for await (const event of source) {
    const { data } = event;
    const file = data.file === undefined ? '' : relative(process.cwd(), data.file);
    if (event.type === 'test:fail' && data.details?.type !== 'suite') {
      yield `fail ${file} :: ${data.name} :: ${firstLine(data.details?.error)}\n`;
    } else if (event.type === 'test:summary' && data.counts !== undefined) {
      const ok = data.success ? 'ok' : 'FAIL';
      if (data.file === undefined) {
        yield `done ${ok} ${counted(data.counts)}\n`;
      } else {
        const now = Date.now();
        yield `file ${file} ${ok} ${counted(data.counts)} seconds=${Math.round((now - since) / 1000)}\n`;
        since = now;
      }
    }
  }
}
