/**
 * A prefix in two configured peer classes is a start-up error naming both
 * classes (issue 23): the trie holds one class per prefix, so the second
 * would silently win. Pure: no root needed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAgentConfig } from '../../agent/config.ts';
import { ConfigError } from '../../common/flags/parse.ts';
import { mergePeerClasses, parsePeerClassEntries } from '../../agent/peers/config.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';

test('the same prefix in two classes is refused, naming both classes', () => {
  assert.throws(
    () =>
      mergePeerClasses(parsePeerClassEntries('onprem=10.0.0.0/8,192.168.0.0/16;storage=172.16.0.0/12,192.168.0.0/16')),
    (err: Error) =>
      /192\.168\.0\.0\/16/.test(err.message) && /"onprem"/.test(err.message) && /"storage"/.test(err.message),
  );
  // Written differently, the same trie entry: host bits, IPv4-mapped IPv6.
  assert.throws(
    () => mergePeerClasses(parsePeerClassEntries('a=10.1.2.3/8'), parsePeerClassEntries('b=10.0.0.0/8')),
    /"a".*"b"/,
  );
  assert.throws(
    () => mergePeerClasses(parsePeerClassEntries('a=10.0.0.0/8;b=::ffff:10.0.0.0/104')),
    /two classes: "a" \(10\.0\.0\.0\/8\) and "b"/,
  );
  assert.throws(() => mergePeerClasses(parsePeerClassEntries('a=2600:1f00::/40;b=2600:1f00:0::/40')), /two classes/);
  // Nested prefixes are fine (the longest match decides), and so is a prefix repeated in its own class.
  assert.deepEqual(
    mergePeerClasses(parsePeerClassEntries('a=10.0.0.0/8;b=10.1.0.0/16;c=fd00::/8,fd00::/8')).map((c) => c.name),
    ['a', 'b', 'c'],
  );
});

test('podmeter agent does not start with a prefix in two classes, from the flag and the file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'classes');
  writeFileSync(file, '# peer classes\nstorage=52.216.0.0/15\n');
  assert.throws(
    () => parseAgentConfig(['--peer-class', 'onprem=52.216.0.0/15', '--peer-classes-file', file], {}),
    (err: unknown) =>
      err instanceof ConfigError &&
      /52\.216\.0\.0\/15 is in two classes: "onprem" .* and "storage"/.test((err as Error).message),
  );
});
