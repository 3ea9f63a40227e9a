/**
 * Integers as BPF maps hold them in keys and values: in the host's byte
 * order (the programs run on this CPU), read from or written to raw bytes.
 */
import { endianness } from 'node:os';

/** Whether the host is little-endian: the byte order of every integer in a map's keys and values. */
export const HOST_LE = endianness() === 'LE';

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function u32Bytes(value: number): Uint8Array {
  const out = new Uint8Array(4);
  view(out).setUint32(0, value, HOST_LE);
  return out;
}

export function u64Bytes(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, value, HOST_LE);
  return out;
}

export function readU32(bytes: Uint8Array, at = 0): number {
  return view(bytes).getUint32(at, HOST_LE);
}

export function readU64(bytes: Uint8Array, at = 0): bigint {
  return view(bytes).getBigUint64(at, HOST_LE);
}
