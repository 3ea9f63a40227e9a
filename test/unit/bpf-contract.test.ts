/**
 * The BPF contract is generated, not copied: agent/kernel/contract.generated.ts
 * is what bpf/generate.ts makes of bpf/podmeter.h and bpf/podmeter.bpf.c
 * (numbers, peer classes, direction order, map and program names with their
 * pins, struct layouts). Fails when either side changed without the other
 * (`make contract` writes the file again).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatted, generate, HEADER, OUTPUT, read, SOURCE } from '../../bpf/generate.ts';
import {
  PODMETER_CLASSES,
  PODMETER_DIRECTIONS,
  PODMETER_FIRST_NAMED,
  PODMETER_MAPS,
  PODMETER_SLOTS,
  PODMETER_STRUCTS,
} from '../../agent/kernel/contract.generated.ts';

const header = readFileSync(HEADER, 'utf8');
const source = readFileSync(SOURCE, 'utf8');

test('contract.generated.ts is what the BPF header and source give', async () => {
  assert.equal(readFileSync(OUTPUT, 'utf8'), await formatted(header, source), 'run make contract');
});

test('a change on the C side changes the generated file (the test above can fail)', async () => {
  const more = header.replace('#define PODMETER_MAX_NAMED 8', '#define PODMETER_MAX_NAMED 9');
  assert.notEqual(more, header);
  const text = await formatted(more, source);
  assert.notEqual(text, readFileSync(OUTPUT, 'utf8'));
  assert.match(text, /PODMETER_SLOTS = 16;/);
  assert.match(text, /podmeter_slots: \{\s*size: 296,/);
  const renamed = source.replace('} podmeter_stats SEC(".maps");', '} podmeter_counts SEC(".maps");');
  assert.throws(() => generate(header, renamed), /no PODMETER_COUNTS_PIN for podmeter_counts/);
});

test('layouts follow C: fields at their alignment, sizes rounded to the largest', () => {
  const c = read(
    'struct a { __u8 x; __u64 y; __u32 z; };\nstruct b { __u32 n; struct a inner[2]; char tail[3]; };',
    '',
  );
  assert.deepEqual(c.structs.get('a'), {
    size: 24,
    align: 8,
    fields: [
      { name: 'x', offset: 0, size: 1 },
      { name: 'y', offset: 8, size: 8 },
      { name: 'z', offset: 16, size: 4 },
    ],
  });
  assert.deepEqual(
    c.structs.get('b')?.fields.map((f) => [f.name, f.offset, f.size]),
    [
      ['n', 0, 4],
      ['inner', 8, 48],
      ['tail', 56, 3],
    ],
  );
  assert.equal(c.structs.get('b')?.size, 64);
  assert.throws(() => read('struct c { int x : 3; };', ''), /struct c: cannot read 'int x : 3'/);
  assert.throws(() => read('struct d { float x; };', ''), /struct d: unknown type 'float'/);
});

test('what user space relies on, as generated', () => {
  assert.deepEqual(PODMETER_DIRECTIONS, ['ingress', 'egress'], "the addon's storageSums order");
  assert.equal(PODMETER_CLASSES.length, PODMETER_FIRST_NAMED);
  assert.equal(PODMETER_STRUCTS.podmeter_slots.size, PODMETER_SLOTS * 16 + PODMETER_STRUCTS.podmeter_peer_cache.size);
  assert.deepEqual(PODMETER_MAPS.stats, { name: 'podmeter_stats', pin: 'map_counters' });
});

test('values: numbers with suffixes, names defined before, + - and parentheses; anything else is an error', () => {
  const c = read('#define A 0x10u\n#define B (A + 2 - (1 + 1))\nenum e { X = B, Y, Z = -1 };', '');
  assert.deepEqual([c.defines.get('A'), c.defines.get('B')], [16, 16]);
  assert.deepEqual(c.enums.get('e'), [
    ['X', 16],
    ['Y', 17],
    ['Z', -1],
  ]);
  assert.throws(() => read('#define C (D + 1)', ''), /'D' is not defined before/);
  assert.throws(() => read('#define C 2 * 3', ''), /'\*' is not understood/);
  assert.throws(() => read('#define C (1 + 2', ''), /a \) is missing/);
});
