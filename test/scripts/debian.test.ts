/**
 * scripts/debian.sh, the one way podmeter's scripts install Debian packages:
 * two installs started at the same moment both succeed (one waits for the
 * other instead of failing on dpkg's lock, as the test lanes once did).
 * Needs root, apt and the Debian mirror; installs two small packages that
 * are not installed (hello, sl, figlet, cowsay: the first two missing) and
 * purges them afterwards.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { test } from 'node:test';

const LIB = new URL('../../scripts/debian.sh', import.meta.url).pathname;
const CANDIDATES = ['hello', 'sl', 'figlet', 'cowsay'];

function bash(script: string, ...args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', `source ${LIB}; ${script}`, 'debian-test', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const installed = (p: string) =>
  spawnSync('dpkg-query', ['-W', '-f=${db:Status-Status}', p], { encoding: 'utf8' }).stdout === 'installed';

test(
  'two installs at the same moment through debian_install both succeed',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    const pkgs = CANDIDATES.filter((p) => !installed(p)).slice(0, 2);
    if (pkgs.length < 2) return t.skip(`two of ${CANDIDATES.join(', ')} must be missing to install them`);
    t.after(async () => {
      const purge = await bash('debian_purge "$@"', ...pkgs.filter(installed));
      assert.equal(purge.code, 0, purge.stderr);
    });
    const [a, b] = await Promise.all(pkgs.map((p) => bash('debian_install "$1"', p)));
    assert.equal(a!.code, 0, `${pkgs[0]}: ${a!.stderr}`);
    assert.equal(b!.code, 0, `${pkgs[1]}: ${b!.stderr}`);
    for (const p of pkgs) assert.ok(installed(p), `${p} is installed`);
    t.diagnostic(`${pkgs.join(' and ')}: ${[a, b].map((r) => r!.stderr.trim().replaceAll('\n', ' / ')).join(' || ')}`);
  },
);

test(
  'a package apt does not know fails naming it and the log',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async () => {
    const r = await bash('debian_install podmeter-no-such-package');
    assert.equal(r.code, 1);
    const log =
      /apt-get could not install podmeter-no-such-package \(whole log: (\/tmp\/podmeter-apt\.\w+\.log)\)/.exec(
        r.stderr,
      )?.[1];
    assert.ok(log, r.stderr);
    assert.match(r.stderr, /running apt-get update once/);
    rmSync(log, { force: true });
  },
);

test('debian_require names what is missing and installs nothing', async () => {
  const r = await bash('debian_require bash podmeter-no-such-package');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Debian packages missing: podmeter-no-such-package \(run: sudo make setup/);
});
