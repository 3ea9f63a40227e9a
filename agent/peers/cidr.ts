/**
 * CIDR prefixes as the peer trie holds them (struct podmeter_peer_key): an
 * IPv6 address, IPv4 as IPv4-mapped (::ffff:a.b.c.d, so an IPv4 /n is a
 * /96+n), host bits cleared so one prefix has one key.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';

export interface Prefix {
  /** Canonical text: 10.0.0.0/8, fd00::/8. */
  readonly text: string;
  /** 128 bits, IPv4 mapped. */
  readonly addr: Uint8Array;
  /** In the 128-bit space (an IPv4 /8 is 104). */
  readonly bits: number;
}

export const KEY_BYTES = 20;

/** Parses `a.b.c.d/n`, `v6/n`, or a bare address (/32, /128); throws an Error saying why not. */
export function parsePrefix(raw: string): Prefix {
  const text = raw.trim();
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const lengthText = slash < 0 ? undefined : text.slice(slash + 1);
  const v4 = isIPv4(address);
  if (!v4 && !isIPv6(address)) throw new Error(`"${raw}" is not an IPv4 or IPv6 address or CIDR prefix`);
  const max = v4 ? 32 : 128;
  const length = lengthText === undefined ? max : /^\d{1,3}$/.test(lengthText) ? Number(lengthText) : NaN;
  if (!(length >= 0 && length <= max)) throw new Error(`"${raw}": the prefix length must be a number from 0 to ${max}`);
  const addr = v4 ? mapped(address) : ipv6Bytes(address);
  const bits = v4 ? 96 + length : length;
  for (let bit = bits; bit < 128; bit++) addr[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { text: `${format(addr, v4)}/${length}`, addr, bits };
}

/**
 * Parses one bare address (`a.b.c.d` or an IPv6 address, no prefix length,
 * no zone, nothing around it) as its full-length prefix; throws an Error
 * saying why not. For values that name one host (a Node's addresses), where
 * a prefix would claim a whole range.
 */
export function parseAddress(raw: string): Prefix {
  if (!isIPv4(raw) && !(isIPv6(raw) && !raw.includes('%')))
    throw new Error(`"${raw}" is not a bare IPv4 or IPv6 address`);
  return parsePrefix(raw);
}

/** The trie key of a prefix: __u32 prefixlen (host order), then the 16 address bytes. */
export function prefixKey(p: Prefix): Uint8Array {
  const key = new Uint8Array(KEY_BYTES);
  const view = new DataView(key.buffer);
  view.setUint32(0, p.bits, endianness() === 'LE');
  key.set(p.addr, 4);
  return key;
}

/** The key that looks up one address (a full-length prefix). */
export function addressKey(address: string): Uint8Array {
  return prefixKey(parsePrefix(address));
}

/** Back from a key read out of the trie. */
export function keyPrefix(key: Uint8Array): Prefix {
  const bits = new DataView(key.buffer, key.byteOffset).getUint32(0, endianness() === 'LE');
  const addr = key.slice(4, 20);
  const v4 = bits >= 96 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff && addr[11] === 0xff;
  return { text: `${format(addr, v4)}/${v4 ? bits - 96 : bits}`, addr, bits };
}

function mapped(v4: string): Uint8Array {
  const addr = new Uint8Array(16);
  addr[10] = 0xff;
  addr[11] = 0xff;
  v4.split('.').forEach((part, i) => (addr[12 + i] = Number(part)));
  return addr;
}

function ipv6Bytes(text: string): Uint8Array {
  let s = text.split('%')[0]!;
  // A trailing dotted IPv4 (::ffff:1.2.3.4) becomes two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const b = mapped(dotted[1]!).subarray(12);
    s = `${s.slice(0, -dotted[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const addr = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    addr[2 * i] = v >> 8;
    addr[2 * i + 1] = v & 0xff;
  });
  return addr;
}

function format(addr: Uint8Array, v4: boolean): string {
  if (v4) return Array.from(addr.subarray(12)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => (addr[2 * i]! << 8) | addr[2 * i + 1]!);
  // The longest run of zero groups (at least two) becomes '::' (RFC 5952).
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i >= 2) best = { at: i, len: j - i };
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}
