/**
 * podmeter's error codes: the one list. An error podmeter raises itself
 * carries one of these as its string `.code` (Node's convention: callers
 * branch on the code, never on the message); errors from the system keep
 * their errno name (`EPERM`) and libbpf's its own (`LIBBPF_ERRNO__VERIFY`).
 * The classes that carry them live with their layer: ConfigError
 * (common/flags/parse.ts), ApiError (common/kube/api.ts), CgroupMountError
 * (agent/cgroups/mount.ts), BpfError (agent/kernel/errors.ts).
 */
export const ErrorCodes = {
  /** A flag or environment variable has a value podmeter cannot use. */
  config: 'ERR_PODMETER_CONFIG',
  /** No cgroup2 hierarchy is mounted. */
  noCgroup2: 'ERR_PODMETER_NO_CGROUP2',
  /** A path that should be a cgroup2 directory (--cgroup-root, an attach target) is not one. */
  notCgroup2: 'ERR_PODMETER_NOT_CGROUP2',
  /** A pin path is not on a BPF filesystem. */
  notBpffs: 'ERR_PODMETER_NOT_BPFFS',
  /** The BPF object lacks a program or map podmeter needs. */
  badBpfObject: 'ERR_PODMETER_BAD_BPF_OBJECT',
  /** A pin podmeter would adopt (map or program in bpffs) has another shape than podmeter's object declares. */
  pinShape: 'ERR_PODMETER_PIN_SHAPE',
  /** The native addon was not built (make build). */
  nativeAddonMissing: 'ERR_PODMETER_NATIVE_ADDON_MISSING',
  /** The Kubernetes API answered with an error status (the HTTP status is `.status`). */
  kubeApi: 'ERR_PODMETER_KUBE_API',
} as const;
