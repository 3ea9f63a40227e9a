/**
 * The /maps page in headless Chromium, with no network: the agent's routes
 * (serve-maps.ts) and the browser both run in a fresh network namespace that
 * has only a loopback, so a chart that needed a CDN or any outside host
 * could not draw. Checks the DOM the script built (--dump-dom) and the
 * pixels of a screenshot (pie slices in the palette's colours).
 * Skips only when /usr/bin/chromium is absent (apt-get install -y chromium).
 * PMT_KEEP_SHOT=<file.png> keeps a copy of the screenshot to look at.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { takeInventory } from '../../agent/maps/inventory.ts';
import { makeNetns } from '../helpers/netns.ts';
import { TEST_PREFIX, randomSuffix } from '../helpers/cleanup.ts';
import { MAP_TYPE, startHolder, uniqueComm } from '../helpers/mapHolder.ts';
import { countPixels, decodePng } from './png.ts';

const CHROMIUM = '/usr/bin/chromium';
const SERVE = fileURLToPath(new URL('./serve-maps.ts', import.meta.url));

function chromium(netnsExec: string[], userDataDir: string, extra: string[], url: string): Promise<string> {
  const argv = [
    ...netnsExec,
    CHROMIUM,
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${userDataDir}`,
    '--window-size=1000,800',
    ...extra,
    url,
  ];
  // Seconds here; minutes in a TCG VM under load.
  const timeoutMs = 240_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: timeoutMs, maxBuffer: 1 << 26, encoding: 'utf8' },
      (err, stdout, stderr) => {
        // Stopped by the timeout, Chromium may still exit 0 (it handles SIGTERM), with no DOM.
        if (child.killed)
          reject(
            new Error(`chromium did not finish within ${timeoutMs / 1000} s and was stopped\n${stderr.slice(-2000)}`),
          );
        else if (err) reject(new Error(`chromium failed: ${err.message}\n${stderr.slice(-2000)}`));
        else resolve(stdout);
      },
    );
  });
}

test(
  '/maps draws pie charts by map name and by owner in headless Chromium, offline',
  { skip: !existsSync(CHROMIUM) && `${CHROMIUM} is absent (apt-get install -y chromium)` },
  async (t) => {
    // Some maps of clearly different sizes, so the pies have several slices.
    const holder = await startHolder(t, { comm: uniqueComm('web') });
    await holder.create({ name: 'pmt_web_big', type: MAP_TYPE.array, key: 4, value: 4096, max: 256 });
    await holder.create({ name: 'pmt_web_mid', type: MAP_TYPE.hash, key: 8, value: 256, max: 1024 });
    await holder.create({ name: 'pmt_web_small', type: MAP_TYPE.array, key: 4, value: 8, max: 4096 });
    const other = await startHolder(t, { comm: uniqueComm('web2') });
    await other.create({ name: 'pmt_web_other', type: MAP_TYPE.array, key: 4, value: 1024, max: 512 });

    const dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}${randomSuffix()}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const inventory = await takeInventory();
    writeFileSync(join(dir, 'inventory.json'), JSON.stringify(inventory));

    const ns = makeNetns(t);
    const server = spawn(ns.exec[0]!, [...ns.exec.slice(1), process.execPath, SERVE, join(dir, 'inventory.json')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    t.after(() => {
      server.stdin.end();
      server.kill('SIGKILL');
    });
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: server.stdout }).once('line', (line) =>
        resolve((JSON.parse(line) as { port: number }).port),
      );
      server.once('exit', (code) => reject(new Error(`serve-maps exited ${code}`)));
    });
    const url = `http://127.0.0.1:${port}/maps`;

    // 1. The DOM after load: slices drawn by the agent-served script.
    const dom = await chromium(ns.exec, join(dir, 'profile-dom'), ['--dump-dom'], url);
    const drawn = Number(/data-drawn="(\d+)"/.exec(dom)?.[1] ?? 0);
    assert.ok(
      drawn >= 3,
      `the script drew the slices (data-drawn=${drawn}); the DOM Chromium returned (${dom.length} chars): ${dom.slice(0, 1500)}`,
    );
    assert.ok((dom.match(/class="slice"/g) ?? []).length >= 3, 'SVG slices in the DOM');
    for (const name of ['pmt_web_big', 'pmt_web_mid', holder.comm, other.comm])
      assert.ok(dom.includes(name), `legend names ${name}`);
    assert.ok(!/(src|href)="https?:/.test(dom), 'no resource from another host');

    // 2. The pixels: both pies are coloured (slices in the palette), not blank or the grey "no maps" disc.
    const shot = join(dir, 'maps.png');
    await chromium(ns.exec, join(dir, 'profile-shot'), [`--screenshot=${shot}`], url);
    const img = decodePng(readFileSync(shot));
    if (process.env.PMT_KEEP_SHOT) writeFileSync(process.env.PMT_KEEP_SHOT, readFileSync(shot));
    assert.equal(img.width, 1000);
    const saturated = (r: number, g: number, b: number) => Math.max(r, g, b) - Math.min(r, g, b) > 40;
    const near = (c: [number, number, number]) => (r: number, g: number, b: number) =>
      Math.abs(r - c[0]) + Math.abs(g - c[1]) + Math.abs(b - c[2]) < 24;
    // Two pies 220 px across side by side under the headings: the map-name one in the left half, the owner one in the right.
    const disc = Math.PI * 110 * 110;
    const leftBox = { x0: 0, y0: 60, x1: 500, y1: 420 };
    const rightBox = { x0: 500, y0: 60, x1: 1000, y1: 420 };
    const left = countPixels(img, leftBox, saturated);
    const right = countPixels(img, rightBox, saturated);
    assert.ok(left > disc * 0.8, `map-name pie coloured (${left} of ~${Math.round(disc)} px)`);
    assert.ok(right > disc * 0.8, `owner pie coloured (${right} of ~${Math.round(disc)} px)`);
    const blue = countPixels(img, leftBox, near([0x4e, 0x79, 0xa7]));
    const orange = countPixels(img, leftBox, near([0xf2, 0x8e, 0x2b]));
    assert.ok(blue > 500 && orange > 50, `first two slice colours present (blue ${blue}, orange ${orange})`);
  },
);
