/**
 * Configured named peer classes: `NAME=CIDR[,CIDR...]`, from the repeatable
 * --peer-class flag (or PODMETER_PEER_CLASS, entries separated by ';' or
 * newlines) and from --peer-classes-file (one entry per line, '#' comments),
 * which reads better in a ConfigMap. Every mistake names the entry.
 */
import { readFileSync } from 'node:fs';
import { classNameProblem, MAX_NAMED_CLASSES } from './classes.ts';
import { parsePrefix, prefixKey, type Prefix } from './cidr.ts';

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
  const cidrs = entry
    .slice(eq + 1)
    .split(',')
    .map((c) => c.trim());
  if (cidrs.every((c) => c === '')) throw new Error(`${at}: no CIDR after '='`);
  const prefixes = cidrs.map((cidr) => {
    try {
      return parsePrefix(cidr);
    } catch (err) {
      throw new Error(`${at}: ${(err as Error).message}`, { cause: err });
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
    throw new Error(`cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const out: PeerClassSpec[] = [];
  text.split('\n').forEach((line, i) => {
    const entry = line.replace(/#.*/, '').trim();
    if (entry !== '') out.push(parseEntry(entry, `line ${i + 1}`));
  });
  return out;
}

/** Joins the classes of all sources: a name given twice, a prefix in two classes, or too many names, is an error. */
export function mergePeerClasses(...sources: readonly (readonly PeerClassSpec[])[]): PeerClassSpec[] {
  const byName = new Map<string, PeerClassSpec>();
  for (const spec of sources.flat()) {
    if (byName.has(spec.name)) throw new Error(`class "${spec.name}" is given twice (put all its CIDRs in one entry)`);
    byName.set(spec.name, spec);
  }
  if (byName.size > MAX_NAMED_CLASSES) {
    throw new Error(
      `${byName.size} classes configured (${[...byName.keys()].join(', ')}); at most ${MAX_NAMED_CLASSES}`,
    );
  }
  // One trie entry per prefix: a prefix in two classes would count its
  // peers in whichever was written last, so it is refused here, by its key
  // (10.0.0.0/8 and ::ffff:10.0.0.0/104 are the same entry).
  const classOf = new Map<string, { name: string; text: string }>();
  for (const spec of byName.values()) {
    for (const prefix of spec.prefixes) {
      const key = Buffer.from(prefixKey(prefix)).toString('hex');
      const other = classOf.get(key);
      if (other !== undefined && other.name !== spec.name) {
        throw new Error(
          `prefix ${prefix.text} is in two classes: "${other.name}" (${other.text}) and "${spec.name}" (${prefix.text}); a prefix may belong to one class only`,
        );
      }
      classOf.set(key, { name: spec.name, text: prefix.text });
    }
  }
  return [...byName.values()];
}
