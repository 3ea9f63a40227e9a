/**
 * The flag-parsing core shared by every podmeter subcommand. A subcommand
 * declares a table of flag specs (value parser, default, help line); this file
 * turns argv plus environment into validated values and renders --help from
 * the same table, so the help text cannot drift from what is accepted.
 *
 * Rules: `--flag value` and `--flag=value`; the last occurrence wins (a
 * repeatable flag keeps them all, newline-joined); a flag
 * beats its environment variable (PODMETER_<FLAG_IN_UPPER_SNAKE>), which beats
 * the default. An empty environment variable counts as unset, because
 * manifests often carry `value: ""` for "not configured".
 *
 * Value parsers (seconds, paths, HOST:PORT, ...) are in values.ts; the flags
 * several commands share (--log-*, --namespace) in sets.ts.
 */
import { ErrorCodes } from '../errors.ts';

export class ConfigError extends Error {
  readonly code = ErrorCodes.config;
  /** The flag as typed on the command line, e.g. '--interval'. */
  flag?: string;
  /** The rejected value, when there was one. */
  value?: string;

  constructor(message: string, flag?: string, value?: string) {
    super(message);
    this.name = 'ConfigError';
    this.flag = flag;
    this.value = value;
  }
}

/** Thrown by value parsers; the core prefixes the flag name and the raw value. */
export class FlagValueError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'FlagValueError';
  }
}

/** Reject a value: `reason` completes `--flag: "value" <reason>`. */
export function invalid(reason: string): never {
  throw new FlagValueError(reason);
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface ParseContext {
  readonly env: Env;
}

export interface FlagSpec<T> {
  /** Placeholder for the value in --help ('SECONDS'); omit for a switch that takes no value. */
  readonly metavar?: string;
  readonly help: string;
  /** Turns the raw text into the value; calls `invalid(reason)` to reject it. */
  readonly parse: (raw: string, ctx: ParseContext) => T;
  readonly default?: T;
  /**
   * Default text found elsewhere (NODE_NAME, the host name): parsed like a
   * flag value, and errors say where it came from (`--node-name (from NODE_NAME)`).
   */
  readonly defaultFrom?: (ctx: ParseContext) => { raw: string; from: string };
  /** How the default reads in --help when it is not a plain value. */
  readonly defaultHelp?: string;
  /** Environment variable name; derived from the flag name unless given; false for none. */
  readonly env?: string | false;
  /** One-letter alias, e.g. 'h' for -h. */
  readonly short?: string;
  /** Every occurrence counts (instead of the last): `parse` gets them joined by newlines. */
  readonly repeatable?: boolean;
}

export type FlagTable = Readonly<Record<string, FlagSpec<unknown>>>;

type ValueOf<S> = S extends { parse: (...args: never[]) => infer V } ? V : never;
type HasDefault<S> = S extends { default: unknown } | { defaultFrom: unknown } ? true : false;

/** Values keyed by flag name; flags without a default may be undefined. */
export type FlagValues<T extends FlagTable> = {
  -readonly [K in keyof T]: HasDefault<T[K]> extends true ? ValueOf<T[K]> : ValueOf<T[K]> | undefined;
};

export interface ParsedFlags<T extends FlagTable> {
  values: FlagValues<T>;
  /** Arguments that are not flags, and everything after `--`. */
  positionals: string[];
}

export interface FlagOptions {
  /** Prefix of derived environment variable names; default 'PODMETER_'. */
  envPrefix?: string;
}

/** Keeps the literal table type so `parseFlags` can type each value. */
export function defineFlags<const T extends FlagTable>(table: T): T {
  return table;
}

export function parseFlags<T extends FlagTable>(
  table: T,
  argv: readonly string[],
  env: Env,
  opts: FlagOptions = {},
): ParsedFlags<T> {
  const ctx: ParseContext = { env };
  const { raw, positionals } = scanArgv(table, argv);
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    const fromArgv = raw.get(name);
    const envName = envNameOf(name, spec, opts);
    const fromEnv = envName === undefined ? undefined : env[envName];
    if (fromArgv !== undefined) {
      values[name] = parseValue(spec, name, fromArgv, undefined, ctx);
    } else if (fromEnv !== undefined && fromEnv !== '') {
      values[name] = parseValue(spec, name, fromEnv, envName, ctx);
    } else if (spec.defaultFrom) {
      const found = spec.defaultFrom(ctx);
      values[name] = parseValue(spec, name, found.raw, found.from, ctx);
    } else {
      values[name] = spec.default;
    }
  }
  return { values: values as FlagValues<T>, positionals };
}

/** parseFlags for a command that takes flags only: a positional argument is a ConfigError. */
export function parseOnlyFlags<T extends FlagTable>(
  table: T,
  argv: readonly string[],
  env: Env,
  command: string,
): FlagValues<T> {
  const { values, positionals } = parseFlags(table, argv, env);
  const [extra] = positionals;
  if (extra !== undefined) {
    throw new ConfigError(`unexpected argument ${JSON.stringify(extra)}: ${command} takes only flags (see --help)`);
  }
  return values;
}

/** True when argv asks for help; check it before parsing so a bad flag does not hide the help. */
export function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((arg) => arg === '--help' || arg === '-h');
}

/** The environment variable a flag reads: PODMETER_ + the flag name in upper snake case. */
export function envNameOf(name: string, spec: FlagSpec<unknown>, opts: FlagOptions = {}): string | undefined {
  if (spec.env === false) return undefined;
  return spec.env ?? `${opts.envPrefix ?? 'PODMETER_'}${name.toUpperCase().replaceAll('-', '_')}`;
}

export interface HelpOptions extends FlagOptions {
  usage: string;
  summary: string;
  /** Extra paragraphs after the flag list. */
  notes?: string;
}

/** --help text generated from the table: usage, then every flag with its default and environment variable. */
export function formatHelp(table: FlagTable, help: HelpOptions): string {
  const lines = [`Usage: ${help.usage}`, '', help.summary, '', 'Flags:'];
  for (const [name, spec] of Object.entries(table)) {
    const short = spec.short ? `-${spec.short}, ` : '';
    lines.push(`  ${short}--${name}${spec.metavar ? ` ${spec.metavar}` : ''}`);
    const facts = [defaultText(spec), envText(name, spec, help)].filter((fact) => fact !== '');
    lines.push(`      ${spec.help}${facts.length > 0 ? ` (${facts.join('; ')})` : ''}`);
  }
  if (help.notes) lines.push('', help.notes);
  return `${lines.join('\n')}\n`;
}

// --- internals --------------------------------------------------------------

/** Raw text per flag name from argv (last occurrence wins), plus positionals. */
function scanArgv(table: FlagTable, argv: readonly string[]): { raw: Map<string, string>; positionals: string[] } {
  const raw = new Map<string, string>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!looksLikeFlag(arg)) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const typed = eq < 0 ? arg : arg.slice(0, eq);
    const name = flagNameOf(table, typed);
    // hasOwn: `--constructor` must not find Object.prototype's.
    const spec = Object.hasOwn(table, name) ? table[name] : undefined;
    if (spec === undefined) throw unknownFlag(table, typed);
    const set = (value: string): void => {
      const before = raw.get(name);
      raw.set(name, spec.repeatable && before !== undefined ? `${before}\n${value}` : value);
    };
    if (eq >= 0) {
      set(arg.slice(eq + 1));
    } else if (spec.metavar === undefined) {
      set('true');
    } else {
      const next = argv[i + 1];
      if (next === undefined || looksLikeFlag(next)) {
        throw new ConfigError(
          `${typed} needs a value: ${typed} ${spec.metavar} or ${typed}=${spec.metavar}`,
          `--${name}`,
        );
      }
      set(next);
      i++;
    }
  }
  return { raw, positionals };
}

/** `--x...` or `-x`; a lone '-' and negative numbers ('-1') are values, not flags. */
function looksLikeFlag(arg: string): boolean {
  return arg.startsWith('--') ? arg.length > 2 : /^-[A-Za-z]/.test(arg);
}

function flagNameOf(table: FlagTable, typed: string): string {
  if (typed.startsWith('--')) return typed.slice(2);
  const letter = typed.slice(1);
  return Object.keys(table).find((name) => table[name]?.short === letter) ?? typed;
}

/** `from` names where a value not typed on the command line came from, for the error message. */
function parseValue(
  spec: FlagSpec<unknown>,
  name: string,
  raw: string,
  from: string | undefined,
  ctx: ParseContext,
): unknown {
  try {
    return spec.parse(raw, ctx);
  } catch (error) {
    if (!(error instanceof FlagValueError)) throw error;
    const label = from === undefined ? `--${name}` : `--${name} (from ${from})`;
    throw new ConfigError(`${label}: ${JSON.stringify(raw)} ${error.message}`, `--${name}`, raw);
  }
}

function unknownFlag(table: FlagTable, typed: string): ConfigError {
  const guess = closestFlag(Object.keys(table), typed.replace(/^-+/, ''));
  const hint = guess === undefined ? ' (see --help)' : `; did you mean --${guess}?`;
  return new ConfigError(`unknown flag ${typed}${hint}`, typed);
}

/** A flag name a typo away: same letters modulo case and '_', a prefix, or within a small edit distance. */
function closestFlag(names: readonly string[], typed: string): string | undefined {
  const normalised = typed.toLowerCase().replaceAll('_', '-');
  const limit = Math.max(1, Math.min(3, Math.floor(normalised.length / 3)));
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = name.startsWith(normalised) && normalised.length >= 3 ? 1 : editDistance(name, normalised);
    if (distance <= limit && (best === undefined || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function defaultText(spec: FlagSpec<unknown>): string {
  if (spec.defaultHelp !== undefined) return `default ${spec.defaultHelp}`;
  const value = spec.default;
  // Other defaults (objects, lists) say how they read in defaultHelp.
  if (typeof value === 'string' || typeof value === 'number' || value === true) return `default ${value}`;
  return '';
}

function envText(name: string, spec: FlagSpec<unknown>, opts: FlagOptions): string {
  const envName = envNameOf(name, spec, opts);
  return envName === undefined ? '' : `env ${envName}`;
}
