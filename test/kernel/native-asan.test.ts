// The addon under AddressSanitizer (issue 23's proof): agent/native is built
// once more, from the same sources, into a temporary directory with
// -fsanitize=address, and test/kernel/native-boundary.test.ts (the property
// tests of every buffer-taking function) and test/kernel/conntrack.test.ts
// (netlink answers of a real conntrack table parsed) each run in a Node
// process that loads that build instead of agent/native/build. Node itself is not instrumented:
// the ASan runtime comes first through LD_PRELOAD (GCC's libasan, as the
// addon is built with g++), leak detection is off (Node's own allocations
// outlive exit by design). Any out-of-bounds access in the addon ends that
// process with an "ERROR: AddressSanitizer" report; the test checks that
// there is none, that every property passed, and that the ASan build was the
// one loaded. Needs root (like the file it runs), g++ and node-gyp (make
// setup installs both), and about a minute of compiling.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { nativeAddonPath } from '../../agent/paths.ts';
import { installRoot } from '../../common/paths.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';

const run = promisify(execFile);

/** Resolves a .node module request for the addon to the ASan build, and reports what the process mapped. */
const REDIRECT = `
const Module = require('node:module');
const { readFileSync } = require('node:fs');
const from = process.env.PODMETER_TEST_ADDON_FROM;
const to = process.env.PODMETER_TEST_ADDON_TO;
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  return request === from ? to : resolve.call(this, request, ...rest);
};
process.on('exit', () => {
  const maps = readFileSync('/proc/self/maps', 'utf8');
  process.stderr.write('podmeter-test-asan: runtime ' + (maps.includes('libasan') ? 'mapped' : 'missing') + ', addon ' + (maps.includes(to) ? 'mapped' : 'missing') + '\\n');
});
`;

/** The files run against the ASan build: the boundary's property tests, and conntrack's answers from a real table. */
const UNDER_ASAN = ['test/kernel/native-boundary.test.ts', 'test/kernel/conntrack.test.ts'];

test(
  'the addon built with AddressSanitizer runs the native boundary property tests and the conntrack tests clean',
  { timeout: 900_000 },
  async (t) => {
    const libasan = execFileSync('g++', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).trim();
    assert.ok(
      libasan.startsWith('/') && existsSync(libasan),
      `GCC's libasan is not installed (g++ -print-file-name=libasan.so: ${libasan})`,
    );
    const dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}asan-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));

    // The same sources, laid out as binding.gyp expects (bpf/ two levels up).
    const native = join(dir, 'agent/native');
    mkdirSync(native, { recursive: true });
    cpSync(join(installRoot, 'agent/native/binding.gyp'), join(native, 'binding.gyp'));
    cpSync(join(installRoot, 'agent/native/src'), join(native, 'src'), { recursive: true });
    cpSync(join(installRoot, 'bpf'), join(dir, 'bpf'), { recursive: true, filter: (p) => !p.endsWith('.c') });
    // node-gyp's makefiles add $(CXXFLAGS) and $(LDFLAGS) from the environment;
    // NODE_PATH lets binding.gyp find node-addon-api from the copy; the headers
    // are the running Node's (no download).
    const nodedir = dirname(dirname(process.execPath));
    await run(join(installRoot, 'node_modules/.bin/node-gyp'), ['rebuild', '--loglevel=warn'], {
      cwd: native,
      env: {
        ...process.env,
        NODE_PATH: join(installRoot, 'node_modules'),
        npm_config_nodedir: nodedir,
        CXXFLAGS: '-fsanitize=address -fno-omit-frame-pointer -g',
        LDFLAGS: '-fsanitize=address',
      },
      maxBuffer: 64 << 20,
      timeout: 600_000,
    });
    const addon = join(native, 'build/Release/podmeter_native.node');
    assert.match(execFileSync('ldd', [addon], { encoding: 'utf8' }), /libasan/, 'the build links the ASan runtime');

    const redirect = join(dir, 'redirect.cjs');
    writeFileSync(redirect, REDIRECT);
    // Run as plain programs (TAP on stdout), not as children of this test runner.
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    for (const file of UNDER_ASAN) {
      let stdout: string;
      let stderr: string;
      let code: number | string = 0;
      try {
        ({ stdout, stderr } = await run(process.execPath, ['--require', redirect, join(installRoot, file)], {
          cwd: installRoot,
          env: {
            ...env,
            LD_PRELOAD: libasan,
            // V8 handles SIGSEGV itself (WebAssembly bounds checks): let it.
            ASAN_OPTIONS: 'detect_leaks=0:allow_user_segv_handler=1:abort_on_error=0:exitcode=99',
            PODMETER_TEST_ADDON_FROM: nativeAddonPath,
            PODMETER_TEST_ADDON_TO: addon,
          },
          maxBuffer: 64 << 20,
          timeout: 600_000,
        }));
      } catch (err) {
        const e = err as { code?: number | string; stdout?: string; stderr?: string };
        ({ stdout = '', stderr = '' } = e);
        code = e.code ?? 'unknown';
      }
      const report = `${file}: exit ${code}\n--- stderr (tail)\n${stderr.slice(-6000)}\n--- stdout (tail)\n${stdout.slice(-3000)}`;
      assert.doesNotMatch(stderr, /ERROR: AddressSanitizer/, report);
      assert.match(
        stderr,
        /podmeter-test-asan: runtime mapped, addon mapped/,
        `the ASan runtime and build were loaded\n${report}`,
      );
      assert.equal(code, 0, report);
      assert.match(stdout, /^(# |ℹ )fail 0$/m, report);
      assert.match(stdout, /^(# |ℹ )pass [1-9]/m, report);
    }
  },
);
