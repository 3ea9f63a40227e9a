/**
 * Value parsers for flag specs (parse.ts): each turns the raw text into a
 * value or rejects it with `invalid(reason)`, which the parser completes
 * into `--flag: "value" <reason>`.
 */
import { homedir } from 'node:os';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { resolve } from 'node:path';
import { invalid, type FlagSpec, type ParseContext } from './parse.ts';

/** A switch: present means true; `--flag=false` and env `0`/`false` turn it off. */
export function switchFlag(
  help: string,
  extra: Partial<FlagSpec<boolean>> = {},
): FlagSpec<boolean> & { default: boolean } {
  return { help, parse: parseBoolean, default: false, ...extra };
}

export function parseBoolean(raw: string): boolean {
  const text = raw.toLowerCase();
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  return invalid('is not true or false');
}

export function oneOf<const V extends string>(choices: readonly V[]): (raw: string) => V {
  return (raw) =>
    (choices as readonly string[]).includes(raw) ? (raw as V) : invalid(`is not one of ${choices.join(', ')}`);
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
    if (ms === 0 && !min.allowZero)
      return invalid(Number(match[1]) === 0 ? `is not a number of seconds ${bound}` : 'is shorter than 1 ms');
    if (ms > MAX_TIMER_MS) return invalid('is longer than 24 days, the longest timer Node.js supports');
    return ms;
  };
}

const LONG_DURATION = /^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)$/;

/**
 * A span of time that is no timer (days allowed, no 24-day cap) to whole
 * milliseconds: a number with its unit (ms, s, m, h, d), above zero.
 */
export function duration(what: string): (raw: string) => number {
  return (raw) => {
    const match = LONG_DURATION.exec(raw.trim());
    if (!match) return invalid(`is not ${what}: a number with a unit (ms, s, m, h or d), e.g. 30d`);
    const ms = Math.round(Number(match[1]) * (match[2] === 'd' ? 86_400_000 : UNIT_MS[match[2]!]!));
    if (ms < 1) return invalid(`is not ${what} above zero`);
    return ms;
  };
}

/** A plain decimal number (no units) at or above `min` (or strictly above, `exclusive`). */
export function decimal(what: string, min: number, exclusive: boolean): (raw: string) => number {
  const bound = `${exclusive ? '>' : '>='} ${min}`;
  return (raw) => {
    const text = raw.trim();
    const value = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
    if (!Number.isFinite(value) || value < min || (exclusive && value === min))
      return invalid(`is not a number of ${what} ${bound}`);
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
  return (
    isIP(host) === 0 &&
    host.length <= 253 &&
    labels.every((part) => label.test(part)) &&
    !/^\d+$/.test(labels.at(-1) ?? '')
  );
}
