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
 */
import { homedir } from 'node:os';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { resolve } from 'node:path';

export class ConfigError extends Error {
  readonly code = 'ERR_PODMETER_CONFIG';
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

export function parseFlags<T extends FlagTable>(table: T, argv: readonly string[], env: Env, opts: FlagOptions = {}): ParsedFlags<T> {
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
export function parseOnlyFlags<T extends FlagTable>(table: T, argv: readonly string[], env: Env, command: string): FlagValues<T> {
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

// --- value parsers shared by subcommands -----------------------------------

/** A switch: present means true; `--flag=false` and env `0`/`false` turn it off. */
export function switchFlag(help: string, extra: Partial<FlagSpec<boolean>> = {}): FlagSpec<boolean> & { default: boolean } {
  return { help, parse: parseBoolean, default: false, ...extra };
}

export function parseBoolean(raw: string): boolean {
  const text = raw.toLowerCase();
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  return invalid('is not true or false');
}

export function oneOf<const V extends string>(choices: readonly V[]): (raw: string) => V {
  return (raw) => (choices as readonly string[]).includes(raw) ? (raw as V) : invalid(`is not one of ${choices.join(', ')}`);
}

/** Node's timers overflow above 2^31-1 ms (about 24.8 days) and fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
const DURATION = /^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$/;
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Seconds (decimals allowed) to whole milliseconds. A unit suffix (500ms, 30s,
 * 5m, 1h) is accepted too, since Kubernetes users write durations that way.
 */
export function seconds(min: { allowZero: boolean }): (raw: string) => number {
  const bound = min.allowZero ? '>= 0' : '> 0';
  return (raw) => {
    const match = DURATION.exec(raw.trim());
    if (!match) return invalid(`is not a number of seconds ${bound}`);
    const ms = Math.round(Number(match[1]) * (UNIT_MS[match[2] ?? 's'] ?? 1000));
    if (ms === 0 && !min.allowZero) return invalid(Number(match[1]) === 0 ? `is not a number of seconds ${bound}` : 'is shorter than 1 ms');
    if (ms > MAX_TIMER_MS) return invalid('is longer than 24 days, the longest timer Node.js supports');
    return ms;
  };
}

/** A plain decimal number (no units) at or above `min` (or strictly above, `exclusive`). */
export function decimal(what: string, min: number, exclusive: boolean): (raw: string) => number {
  const bound = `${exclusive ? '>' : '>='} ${min}`;
  return (raw) => {
    const text = raw.trim();
    const value = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
    if (!Number.isFinite(value) || value < min || (exclusive && value === min)) return invalid(`is not a number of ${what} ${bound}`);
    return value;
  };
}

/**
 * A filesystem path, made absolute against the working directory at start-up
 * so later code never depends on the cwd. A leading `~/` is expanded because
 * the shell does not expand it in the `--flag=~/x` form.
 */
export function pathValue(raw: string, ctx: ParseContext): string {
  if (raw.trim() === '') return invalid('is not a path');
  if (raw.includes('\0')) return invalid('contains a NUL byte');
  const home = ctx.env.HOME || homedir();
  const expanded = raw === '~' ? home : raw.startsWith('~/') ? `${home}${raw.slice(1)}` : raw;
  return resolve(expanded);
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** HOST:PORT with IPv6 hosts in brackets ([::]:9471); an empty host (`:9471`) means 0.0.0.0. Port 0 picks a free port. */
export function hostPort(raw: string): HostPort {
  const example = 'HOST:PORT (e.g. 0.0.0.0:9471 or [::]:9471)';
  const parts = splitHostPort(raw);
  if (parts === undefined) return invalid(`is not ${example}`);
  const { host, portText, bracketed } = parts;
  if (bracketed && !isIPv6(host)) return invalid(`is not ${example}: "${host}" is not an IPv6 address`);
  if (!bracketed && host.includes(':')) return invalid(`is not ${example}: put an IPv6 address in brackets`);
  if (!bracketed && host !== '' && !isIPv4(host) && !isHostname(host)) {
    return invalid(`is not ${example}: "${host}" is not an IP address or host name`);
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) return invalid(`is not ${example}: the port must be a number from 0 to 65535`);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** A Kubernetes object name of the DNS-subdomain kind (node names are): lower case, ≤ 253 characters. */
export function kubernetesName(raw: string): string {
  const label = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
  if (raw.length > 253 || !new RegExp(`^${label}(\\.${label})*$`).test(raw)) {
    return invalid('is not a valid Kubernetes name (lower case letters, digits, - and ., at most 253 characters)');
  }
  return raw;
}

// --- internals --------------------------------------------------------------

/** `[v6]:port` or `host:port`, split at the last ':' (the port never contains one). */
function splitHostPort(raw: string): { host: string; portText: string; bracketed: boolean } | undefined {
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']:');
    return close < 0 ? undefined : { host: raw.slice(1, close), portText: raw.slice(close + 2), bracketed: true };
  }
  const colon = raw.lastIndexOf(':');
  return colon < 0 ? undefined : { host: raw.slice(0, colon), portText: raw.slice(colon + 1), bracketed: false };
}

/** RFC 1123 host name; an all-digit last label would be a mistyped IPv4 address (999.1.1.1). */
function isHostname(host: string): boolean {
  const label = /^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$/;
  const labels = host.split('.');
  return isIP(host) === 0 && host.length <= 253 && labels.every((part) => label.test(part)) && !/^\d+$/.test(labels.at(-1) ?? '');
}

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
        throw new ConfigError(`${typed} needs a value: ${typed} ${spec.metavar} or ${typed}=${spec.metavar}`, `--${name}`);
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
function parseValue(spec: FlagSpec<unknown>, name: string, raw: string, from: string | undefined, ctx: ParseContext): unknown {
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
  if (spec.default === undefined || spec.default === false) return '';
  return `default ${String(spec.default)}`;
}

function envText(name: string, spec: FlagSpec<unknown>, opts: FlagOptions): string {
  const envName = envNameOf(name, spec, opts);
  return envName === undefined ? '' : `env ${envName}`;
}

/** `--namespace`: where podmeter's own objects live (the Downward API's POD_NAMESPACE in the chart). */
export function namespaceFlag(help: string) {
  return {
    metavar: 'NAMESPACE',
    help,
    parse: kubernetesName,
    defaultFrom: (ctx: ParseContext) => (ctx.env.POD_NAMESPACE ? { raw: ctx.env.POD_NAMESPACE, from: 'POD_NAMESPACE' } : { raw: 'podmeter', from: 'the default' }),
    defaultHelp: '$POD_NAMESPACE, else podmeter',
  };
}

/** --log-level and --log-format, the same for every long-running command. */
export const logFlags = {
  'log-level': {
    metavar: 'trace|debug|info|warn|error',
    help: 'Least severe level that is logged',
    parse: oneOf(['trace', 'debug', 'info', 'warn', 'error']),
    default: 'info',
  },
  'log-format': {
    metavar: 'json|pretty|auto',
    help: 'Log line format; auto is pretty when stderr is a terminal, else json',
    parse: oneOf(['json', 'pretty', 'auto']),
    default: 'auto',
  },
} as const;
