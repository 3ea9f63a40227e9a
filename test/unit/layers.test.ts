/**
 * The import rules of the source tree, read from the files themselves so
 * they stay true: layers point one way,
 *
 *   cli -> agent | operator -> common -> (nothing of ours)
 *
 * agent/ and operator/ never import each other (what both need is in
 * common/, the contract between them in common/contract/), and nothing
 * outside cli/ imports cli/.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const LAYERS = ['cli', 'agent', 'operator', 'common'] as const;
type Layer = (typeof LAYERS)[number];

/** What each layer may import from the others (itself always). */
const ALLOWED: Readonly<Record<Layer, readonly Layer[]>> = {
  cli: ['agent', 'operator', 'common'],
  agent: ['common'],
  operator: ['common'],
  common: [],
};

/** Every relative module specifier in a TypeScript source: static imports, re-exports and import(). */
export function relativeImports(source: string): string[] {
  const specifiers: string[] = [];
  for (const m of source.matchAll(
    /(?:^|[\s;])(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm,
  )) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec !== undefined && spec.startsWith('.')) specifiers.push(spec);
  }
  return specifiers;
}

function sourcesOf(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory() && entry.name !== 'build' && entry.name !== 'node_modules') out.push(...sourcesOf(path));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

function layerOf(path: string): Layer | undefined {
  const top = path.split('/')[0];
  return LAYERS.find((layer) => layer === top);
}

/** Imports that break the rules, as `file -> imported file`. */
function violations(): string[] {
  const found: string[] = [];
  for (const layer of LAYERS) {
    for (const file of sourcesOf(layer)) {
      for (const spec of relativeImports(readFileSync(join(ROOT, file), 'utf8'))) {
        const target = relative(ROOT, resolve(ROOT, dirname(file), spec));
        const to = layerOf(target);
        if (to === undefined) found.push(`${file} -> ${target} (outside the program's layers)`);
        else if (to !== layer && !ALLOWED[layer].includes(to)) found.push(`${file} -> ${target}`);
      }
    }
  }
  return found;
}

test('the import scan sees every form of import', () => {
  const source = [
    "import { a } from '../agent/x.ts';",
    'import type { B } from "../operator/y.ts";',
    "export { c } from './z.ts';",
    "const m = await import('../cli/w.ts');",
    "import '../common/side.ts';",
    "import {\n  d,\n  e,\n} from '../common/multi.ts';",
    "import { f } from 'pino';",
  ].join('\n');
  assert.deepEqual(relativeImports(source), [
    '../agent/x.ts',
    '../operator/y.ts',
    './z.ts',
    '../cli/w.ts',
    '../common/side.ts',
    '../common/multi.ts',
  ]);
});

test('layers point one way: cli -> agent | operator -> common', () => {
  for (const layer of LAYERS) assert.ok(sourcesOf(layer).length > 0, `${layer}/ has sources`);
  assert.deepEqual(violations(), []);
});
