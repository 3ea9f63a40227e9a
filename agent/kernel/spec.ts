/**
 * What a BPF object file declares, in cilium/ebpf's vocabulary (CollectionSpec,
 * MapSpec, ProgramSpec): read from the ELF without loading anything. Pins
 * adopted from bpffs are compared with the object podmeter would load, so the
 * shapes they must have are written once, in bpf/*.bpf.c and bpf/podmeter.h,
 * never copied by hand. A pin of another shape (another version's, or
 * anything placed at the path through the bpffs mount) is refused before a
 * single element is read or written.
 */
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from './errors.ts';
import { native, type MapInfo, type ProgInfo, type RawMapSpec, type RawProgramSpec } from './native.ts';

/** A map as the object declares it; `object` is the file's path (named in errors). */
export type MapSpec = Readonly<RawMapSpec & { object: string }>;
/** A program as the object declares it; `object` is the file's path. */
export type ProgramSpec = Readonly<RawProgramSpec & { object: string }>;

/** The kernel keeps BPF_OBJ_NAME_LEN - 1 characters of a name. */
const KERNEL_NAME_CHARS = 15;

export class CollectionSpec {
  /** The object file the specs come from (named in errors). */
  readonly path: string;
  readonly maps: ReadonlyMap<string, MapSpec>;
  readonly programs: ReadonlyMap<string, ProgramSpec>;

  private constructor(path: string, maps: RawMapSpec[], programs: RawProgramSpec[]) {
    this.path = path;
    this.maps = new Map(maps.map((m) => [m.name, Object.freeze({ ...m, object: path })]));
    this.programs = new Map(programs.map((p) => [p.name, Object.freeze({ ...p, object: path })]));
  }

  static load(path: string): CollectionSpec {
    const raw = native.objectSpec(path);
    return new CollectionSpec(path, raw.maps, raw.programs);
  }

  map(name: string): MapSpec {
    const m = this.maps.get(name);
    if (m === undefined)
      throw new BpfError({
        code: ErrorCodes.badBpfObject,
        message: `BPF object '${this.path}' has no map '${name}'`,
        path: this.path,
      });
    return m;
  }

  program(name: string): ProgramSpec {
    const p = this.programs.get(name);
    if (p === undefined)
      throw new BpfError({
        code: ErrorCodes.badBpfObject,
        message: `BPF object '${this.path}' has no program '${name}'`,
        path: this.path,
      });
    return p;
  }
}

/** "lpm_trie, key 20 B, value 4 B, max_entries 65536" */
export function describeMapShape(m: Pick<MapInfo, 'typeName' | 'keySize' | 'valueSize' | 'maxEntries'>): string {
  return `${m.typeName}, key ${m.keySize} B, value ${m.valueSize} B, max_entries ${m.maxEntries}`;
}

/** What differs between a map in the kernel and its spec: type, key size, value size, max entries ([] when none). */
export function mapDifferences(info: MapInfo, spec: MapSpec): string[] {
  const out: string[] = [];
  if (info.type !== spec.type) out.push('type');
  if (info.keySize !== spec.keySize) out.push('key size');
  if (info.valueSize !== spec.valueSize) out.push('value size');
  if (info.maxEntries !== spec.maxEntries) out.push('max_entries');
  return out;
}

/** Throws when the map pinned at `path` (described by `info`) does not have the shape of `spec`. */
export function checkPinnedMap(path: string, info: MapInfo, spec: MapSpec): void {
  const differences = mapDifferences(info, spec);
  if (differences.length === 0) return;
  throw pinShapeError(
    path,
    `pinned map '${path}' is not podmeter's ${spec.name}: its ${differ(differences)}` +
      ` (pinned: ${describeMapShape(info)}, map '${info.name}' id ${info.id}; expected: ${describeMapShape(spec)}, from ${spec.object})`,
  );
}

/**
 * Throws when the program pinned at `path` is not `spec`'s: another program
 * type, another name (the kernel does not report a program's expected attach
 * type; the name, which differs per direction, stands in for it), or a
 * program that does not use `maps` (it would count into, or classify from,
 * maps other than the ones podmeter reads and writes).
 */
export function checkPinnedProgram(
  path: string,
  info: ProgInfo,
  spec: ProgramSpec,
  maps: readonly { id: number; what: string }[],
): void {
  const mismatch = programMismatch(info, spec, maps);
  if (mismatch !== undefined)
    throw pinShapeError(path, `pinned program '${path}' is not podmeter's ${spec.name}: ${mismatch}`);
}

/**
 * What makes a loaded program (`info`) other than `spec`'s, using `maps`
 * (see checkPinnedProgram): "its name differs and it does not use the
 * pinned map_counters (pinned: ...; expected: ...)"; undefined when nothing.
 */
export function programMismatch(
  info: ProgInfo,
  spec: ProgramSpec,
  maps: readonly { id: number; what: string }[],
): string | undefined {
  const wantName = spec.name.slice(0, KERNEL_NAME_CHARS);
  const differences: string[] = [];
  if (info.type !== spec.type) differences.push('type');
  if (info.name !== wantName) differences.push('name');
  const missing = maps.filter((m) => !info.mapIds.includes(m.id));
  if (differences.length === 0 && missing.length === 0) return undefined;
  const shape =
    `pinned: ${info.typeName} '${info.name}' id ${info.id}, maps [${info.mapIds.join(', ')}]; ` +
    `expected: ${spec.typeName} '${wantName}' (attach type ${spec.attachTypeName}, from ${spec.object}), maps [${maps.map((m) => `${m.id} (${m.what})`).join(', ')}]`;
  const what = [
    ...(differences.length > 0 ? [`its ${differ(differences)}`] : []),
    ...(missing.length > 0 ? [`it does not use the pinned ${missing.map((m) => m.what).join(', ')}`] : []),
  ].join(' and ');
  return `${what} (${shape})`;
}

/** enum bpf_map_type: BPF_MAP_TYPE_CGROUP_STORAGE, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE. */
const CGROUP_STORAGE_TYPES: readonly number[] = [19, 21];

/**
 * A cgroup storage map: its element for a cgroup and attach type is made
 * when a program using it is attached and stays with that attachment, also
 * when a link is moved to another program (the kernel allocates nothing
 * then), so a program moved onto a link must use the very same map.
 */
export function isCgroupStorage(spec: Pick<MapSpec, 'type'>): boolean {
  return CGROUP_STORAGE_TYPES.includes(spec.type);
}

/** "type differs", "key size, value size differ" */
function differ(what: string[]): string {
  return `${what.join(', ')} ${what.length === 1 ? 'differs' : 'differ'}`;
}

function pinShapeError(path: string, message: string): BpfError {
  return new BpfError({
    code: ErrorCodes.pinShape,
    message: `${message}. Refusing to adopt it: it is another version's pin, or not podmeter's. Remove the pins under '${path.slice(0, path.lastIndexOf('/'))}' to start afresh (cgroups counted so far then start again from zero)`,
    path,
  });
}
