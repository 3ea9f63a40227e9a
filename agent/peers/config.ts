/**
 * Configured named peer classes: `NAME=CIDR[,CIDR...]`, from the repeatable
 * --peer-class flag (or PODMETER_PEER_CLASS, entries separated by ';' or
 * newlines) and from --peer-classes-file (one entry per line, '#' comments),
 * which reads better in a ConfigMap. Every mistake names the entry.
 */
import { readFileSync } from 'node:fs';
import { classNameProblem, MAX_NAMED_CLASSES } from './classes.ts';
import { parsePrefix, type Prefix } from './cidr.ts';

export interface PeerClassSpec {
  readonly name: string;
  readonly prefixes: readonly Prefix[];
}

/** Throws an Error whose message names the bad entry; `where` says where the entry came from ('line 3'). */
function parseEntry(entry: string, where: string): PeerClassSpec {
  const eq = entry.indexOf('=');
  // Flag entries: the flag parser already quotes the value.
  const at = where === '' ? 'entry' : `${where} "${entry}"`;
  if (eq < 0) throw new Error(`${at}: not NAME=CIDR[,CIDR...]`);
  const name = entry.slice(0, eq).trim();
  const problem = classNameProblem(name);
  if (problem !== undefined) throw new Error(`${at}: class name "${name}" ${problem}`);
  const cidrs = entry.slice(eq + 1).split(',').map((c) => c.trim());
  if (cidrs.every((c) => c === '')) throw new Error(`${at}: no CIDR after '='`);
  const prefixes = cidrs.map((cidr) => {
    try {
      return parsePrefix(cidr);
    } catch (err) {
      throw new Error(`${at}: ${(err as Error).message}`);
    }
  });
  return { name, prefixes };
}

/** Entries of the flag (newline-joined occurrences; ';' also separates). */
export function parsePeerClassEntries(raw: string): PeerClassSpec[] {
  return raw
    .split(/[\n;]/)
    .map((e) => e.trim())
    .filter((e) => e !== '')
    .map((e) => parseEntry(e, ''));
}

/** A classes file: one NAME=CIDR[,CIDR...] per line; blank lines and '#' comments are skipped. */
export function readPeerClassesFile(path: string): PeerClassSpec[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const out: PeerClassSpec[] = [];
  text.split('\n').forEach((line, i) => {
    const entry = line.replace(/#.*/, '').trim();
    if (entry !== '') out.push(parseEntry(entry, `line ${i + 1}`));
  });
  return out;
}

/** Joins the classes of all sources: a name given twice, or too many names, is an error. */
export function mergePeerClasses(...sources: readonly (readonly PeerClassSpec[])[]): PeerClassSpec[] {
  const byName = new Map<string, PeerClassSpec>();
  for (const spec of sources.flat()) {
    if (byName.has(spec.name)) throw new Error(`class "${spec.name}" is given twice (put all its CIDRs in one entry)`);
    byName.set(spec.name, spec);
  }
  if (byName.size > MAX_NAMED_CLASSES) {
    throw new Error(`${byName.size} classes configured (${[...byName.keys()].join(', ')}); at most ${MAX_NAMED_CLASSES}`);
  }
  return [...byName.values()];
}
