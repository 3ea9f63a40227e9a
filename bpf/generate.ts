/**
 * Generates agent/kernel/contract.generated.ts from bpf/podmeter.h and
 * bpf/podmeter.bpf.c, as bpf2go does for Go: the numbers (#defines), the
 * peer classes (enum podmeter_class), the direction order (enum
 * podmeter_direction), the maps and programs with their pins, and the layout
 * of every struct of the header. The BPF source is where each of them is
 * written; TypeScript only imports the generated file.
 *
 *   node bpf/generate.ts           writes the file (make contract; make build runs it)
 *   node bpf/generate.ts --check   exits 1 when the file is not what the sources give
 *
 * A small reader of the C that podmeter.h uses (no preprocessor beyond
 * #define, no bit-fields, no unions): anything else is an error, so the
 * header cannot grow a construct the generator misreads.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../', import.meta.url);
export const HEADER = fileURLToPath(new URL('bpf/podmeter.h', ROOT));
export const SOURCE = fileURLToPath(new URL('bpf/podmeter.bpf.c', ROOT));
export const OUTPUT = fileURLToPath(new URL('agent/kernel/contract.generated.ts', ROOT));

/** Size and alignment of the C types the header uses. */
const SCALARS: Readonly<Record<string, number>> = { __u8: 1, char: 1, __u16: 2, __u32: 4, __u64: 8 };

interface Field {
  name: string;
  offset: number;
  size: number;
  /** Elements when the field is an array. */
  count?: number;
}

interface Struct {
  size: number;
  align: number;
  fields: Field[];
}

function stripComments(c: string): string {
  return c.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, ' ');
}

/** A #define's or enum value's expression: numbers (with u/l suffixes), names defined before, + - and parentheses. */
function evaluate(expr: string, known: ReadonlyMap<string, number>): number {
  const tokens = expr.match(/0x[0-9a-f]+|[0-9]+|[A-Za-z_][A-Za-z0-9_]*|[-+()]|\S/gi) ?? [];
  let at = 0;
  const fail = (why: string): never => {
    throw new Error(`cannot evaluate '${expr}': ${why}`);
  };
  const term = (): number => {
    const t = tokens[at++] ?? fail('it ends early');
    if (t === '(') {
      const v = sum();
      if (tokens[at++] !== ')') fail('a ) is missing');
      return v;
    }
    if (t === '-') return -term();
    if (/^(0x[0-9a-f]+|[0-9]+)$/i.test(t)) {
      if (/^[ul]+$/i.test(tokens[at] ?? '')) at++; // 0x0fffffffu
      return Number(t);
    }
    const v = known.get(t);
    return v ?? fail(`'${t}' is not defined before`);
  };
  const sum = (): number => {
    let v = term();
    while (tokens[at] === '+' || tokens[at] === '-') v = tokens[at++] === '+' ? v + term() : v - term();
    return v;
  };
  const value = sum();
  if (at !== tokens.length) fail(`'${tokens[at]}' is not understood`);
  return value;
}

export interface Contract {
  defines: Map<string, number>;
  strings: Map<string, string>;
  enums: Map<string, [string, number][]>;
  structs: Map<string, Struct>;
  maps: { name: string; section: string }[];
  programs: { name: string; section: string }[];
}

/** Reads the header and the program source. */
export function read(header: string, source: string): Contract {
  const h = stripComments(header);
  const defines = new Map<string, number>();
  const strings = new Map<string, string>();
  const enums = new Map<string, [string, number][]>();
  const structs = new Map<string, Struct>();
  // Definitions in the order they appear: a value may use any name defined before it.
  const item = /#define\s+(\w+)[ \t]+([^\n]+)|enum\s+(\w+)\s*\{([^}]*)\}\s*;|struct\s+(\w+)\s*\{([^}]*)\}\s*;/g;
  for (const m of h.matchAll(item)) {
    if (m[1] !== undefined) {
      const text = m[2]!.trim();
      if (text.startsWith('"')) strings.set(m[1], JSON.parse(text) as string);
      else defines.set(m[1], evaluate(text, defines));
    } else if (m[3] !== undefined) {
      const members: [string, number][] = [];
      let next = 0;
      for (const part of m[4]!.split(',')) {
        if (part.trim() === '') continue;
        const [name, expr] = part.split('=').map((s) => s.trim());
        next = expr === undefined ? next : evaluate(expr, defines);
        members.push([name!, next]);
        defines.set(name!, next++);
      }
      enums.set(m[3], members);
    } else {
      structs.set(m[5]!, layout(m[5]!, m[6]!, defines, structs));
    }
  }
  const s = stripComments(source);
  const maps = [...s.matchAll(/(?:\}|struct\s+\w+)\s*(\w+)\s+SEC\("(\.maps)"\)\s*;/g)].map((m) => ({
    name: m[1]!,
    section: m[2]!,
  }));
  const programs = [...s.matchAll(/SEC\("([^"]+)"\)\s*int\s+(\w+)\s*\(/g)].map((m) => ({
    name: m[2]!,
    section: m[1]!,
  }));
  return { defines, strings, enums, structs, maps, programs };
}

/** C's layout of a struct: each field at its alignment, the size a multiple of the largest. */
function layout(
  name: string,
  body: string,
  defines: ReadonlyMap<string, number>,
  structs: Map<string, Struct>,
): Struct {
  const fields: Field[] = [];
  let offset = 0;
  let align = 1;
  for (const decl of body.split(';')) {
    if (decl.trim() === '') continue;
    const m = /^\s*(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[([^\]]+)\])?\s*$/.exec(decl);
    if (m === null) throw new Error(`struct ${name}: cannot read '${decl.trim()}'`);
    const type = m[1]!.replace(/\s+/g, ' ');
    const inner = type.startsWith('struct ') ? structs.get(type.slice(7)) : undefined;
    const size = inner?.size ?? SCALARS[type];
    const fieldAlign = inner?.align ?? SCALARS[type];
    if (size === undefined || fieldAlign === undefined) throw new Error(`struct ${name}: unknown type '${type}'`);
    const count = m[3] === undefined ? undefined : evaluate(m[3], defines);
    offset = Math.ceil(offset / fieldAlign) * fieldAlign;
    fields.push({ name: m[2]!, offset, size: size * (count ?? 1), ...(count === undefined ? {} : { count }) });
    offset += size * (count ?? 1);
    align = Math.max(align, fieldAlign);
  }
  return { size: Math.ceil(offset / align) * align, align, fields };
}

/** `PODMETER_CROSS_ZONE` -> `cross-zone` */
const className = (member: string) =>
  member
    .replace(/^PODMETER_/, '')
    .toLowerCase()
    .replace(/_/g, '-');
/** `podmeter_stats` -> `stats` */
const keyOf = (name: string) => name.replace(/^podmeter_/, '');

/** The generated file's text (before Prettier). */
export function generate(header: string, source: string): string {
  const c = read(header, source);
  const classes = c.enums.get('podmeter_class');
  const directions = c.enums.get('podmeter_direction');
  if (classes === undefined || directions === undefined)
    throw new Error('podmeter.h needs enum podmeter_class and enum podmeter_direction');
  const firstNamed = c.defines.get('PODMETER_FIRST_NAMED');
  const pinOf = (name: string): string => {
    const pin = c.strings.get(`PODMETER_${keyOf(name).toUpperCase()}_PIN`);
    if (pin === undefined) throw new Error(`podmeter.h has no PODMETER_${keyOf(name).toUpperCase()}_PIN for ${name}`);
    return pin;
  };
  const out: string[] = [
    '// Generated by bpf/generate.ts from bpf/podmeter.h and bpf/podmeter.bpf.c: do not edit.',
    '// `make contract` writes it again; test/unit/bpf-contract.test.ts fails when it differs from the sources.',
    '',
  ];
  const builtin = classes.filter(([member, value]) => member !== 'PODMETER_FIRST_NAMED' && value !== firstNamed);
  for (const [name, value] of c.defines) {
    if (builtin.some(([member]) => member === name) || directions.some(([member]) => member === name)) continue;
    out.push(`export const ${name} = ${name.endsWith('_MASK') ? `0x${value.toString(16)}` : value};`);
  }
  out.push(
    '',
    '/** enum podmeter_class: the built-in peer classes by slot (named classes from PODMETER_FIRST_NAMED on). */',
    `export const PODMETER_CLASSES = [${[...builtin]
      .sort((a, b) => a[1] - b[1])
      .map(([member], i, all) => {
        if (all[i]![1] !== i) throw new Error(`enum podmeter_class: ${member} is not in slot ${i}`);
        return `'${className(member)}'`;
      })
      .join(', ')}] as const;`,
    '',
    "/** enum podmeter_direction: the order of the two directions wherever user space gets both (the addon's storageSums). */",
    `export const PODMETER_DIRECTIONS = [${[...directions]
      .sort((a, b) => a[1] - b[1])
      .map(([member]) => `'${className(member)}'`)
      .join(', ')}] as const;`,
    '',
    '/** The maps of podmeter.bpf.c by key (the name without `podmeter_`): the name in the object and the kernel, and the pin in --bpffs. */',
    `export const PODMETER_MAPS = {${c.maps.map((m) => `${keyOf(m.name)}: { name: '${m.name}', pin: '${pinOf(m.name)}' }`).join(', ')}} as const;`,
    '',
    '/** The programs of podmeter.bpf.c by key, with their section and pin. */',
    `export const PODMETER_PROGRAMS = {${c.programs.map((p) => `${keyOf(p.name)}: { name: '${p.name}', section: '${p.section}', pin: '${pinOf(p.name)}' }`).join(', ')}} as const;`,
    '',
    "/** Every struct of podmeter.h: its size and each field's offset and size in bytes (count: array elements). */",
    `export const PODMETER_STRUCTS = {${[...c.structs]
      .map(
        ([name, s]) =>
          `${name}: { size: ${s.size}, fields: {${s.fields
            .map(
              (f) =>
                `${f.name}: { offset: ${f.offset}, size: ${f.size}${f.count === undefined ? '' : `, count: ${f.count}`} }`,
            )
            .join(', ')}} }`,
      )
      .join(', ')}} as const;`,
  );
  return `${out.join('\n')}\n`;
}

/** The generated file's text as Prettier leaves it (the tree is formatted). */
export async function formatted(
  header = readFileSync(HEADER, 'utf8'),
  source = readFileSync(SOURCE, 'utf8'),
): Promise<string> {
  const prettier = await import('prettier');
  const options = await prettier.resolveConfig(OUTPUT);
  return prettier.format(generate(header, source), { ...options, filepath: OUTPUT });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await formatted();
  if (process.argv.includes('--check')) {
    if (readFileSync(OUTPUT, 'utf8') !== text) {
      console.error(`${OUTPUT} differs from bpf/podmeter.h and bpf/podmeter.bpf.c: run make contract`);
      process.exit(1);
    }
  } else {
    writeFileSync(OUTPUT, text);
  }
}
