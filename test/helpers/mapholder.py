#!/usr/bin/env python3
"""
A process that creates and holds BPF maps for podmeter's map inventory tests,
using the bpf(2) system call directly (ctypes; no libbpf, no BTF).

  mapholder.py serve [--comm NAME]
      Reads one JSON command per stdin line, answers one JSON line each:
        {"op":"create","name":N,"type":T,"key":K,"value":V,"max":M,"flags":F}
            -> {"fd":fd,"id":map_id,"memlock":bytes}     (from /proc/self/fdinfo)
        {"op":"open","id":map_id}   -> {"fd":fd}          (BPF_MAP_GET_FD_BY_ID)
        {"op":"pin","fd":fd,"path":P} -> {}               (BPF_OBJ_PIN)
        {"op":"close","fd":fd}      -> {}
        {"op":"fork","comm":NAME}   -> {"pid":pid}   a child that inherits every fd and
                                                     sleeps until killed (or this process dies)
        {"op":"exit"}               -> exits
      Errors answer {"error":"...","errno":n}. EOF on stdin exits.
  mapholder.py churn --count N [--comm NAME]
      Keeps N small maps open in a rolling window, making a new one and closing the
      oldest again and again (a few thousand a second) until killed or stdin closes;
      prints {"event":"running"} once the first N are made.
  mapholder.py hold --groups G --per K
      Creates G*K small array maps and G `sleep` processes, each holding K of them
      (fds passed over exec); prints {"event":"ready","pids":[...],"ids":[...]} and
      waits. The sleepers are this process's children: kill the cgroup to end all.

Every process started by it sets PR_SET_PDEATHSIG so it dies with its parent.
"""
import ctypes
import errno
import json
import os
import platform
import resource
import select
import signal
import struct
import subprocess
import sys

BPF_MAP_CREATE = 0
BPF_OBJ_PIN = 6
BPF_MAP_GET_FD_BY_ID = 14

SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}[platform.machine()]
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class BpfError(Exception):
    def __init__(self, what, err):
        super().__init__(f"{what}: {os.strerror(err)}")
        self.errno = err


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    rc = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        raise BpfError(f"bpf({cmd})", ctypes.get_errno())
    return rc


def set_comm(name):
    if name:
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def fdinfo(fd):
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def create(name, map_type, key, value, max_entries, flags=0):
    attr = bytearray(128)
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name[16]
    struct.pack_into("<7I16s", attr, 0, map_type, key, value, max_entries, flags, 0, 0, name.encode()[:15])
    return bpf(BPF_MAP_CREATE, attr)


def open_by_id(map_id):
    attr = bytearray(128)
    struct.pack_into("<III", attr, 0, map_id, 0, 0)
    return bpf(BPF_MAP_GET_FD_BY_ID, attr)


def pin(fd, path):
    cpath = ctypes.create_string_buffer(path.encode())
    attr = bytearray(128)
    struct.pack_into("<QII", attr, 0, ctypes.addressof(cpath), fd, 0)
    return bpf(BPF_OBJ_PIN, attr)


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fork_sleeper(comm):
    pid = os.fork()
    if pid == 0:
        try:
            die_with_parent()
            set_comm(comm)
            os.close(0)
            while True:
                signal.pause()
        finally:
            os._exit(0)
    return pid


def serve():
    children = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "create":
                fd = create(cmd["name"], cmd["type"], cmd["key"], cmd["value"], cmd["max"], cmd.get("flags", 0))
                info = fdinfo(fd)
                reply({"fd": fd, "id": int(info["map_id"]), "memlock": int(info.get("memlock", "-1"))})
            elif op == "open":
                reply({"fd": open_by_id(cmd["id"])})
            elif op == "pin":
                pin(cmd["fd"], cmd["path"])
                reply({})
            elif op == "close":
                os.close(cmd["fd"])
                reply({})
            elif op == "fork":
                pid = fork_sleeper(cmd.get("comm", ""))
                children.append(pid)
                reply({"pid": pid})
            elif op == "exit":
                break
            else:
                reply({"error": f"unknown op {op!r}", "errno": 0})
        except BpfError as e:
            reply({"error": str(e), "errno": e.errno})
        except OSError as e:
            reply({"error": str(e), "errno": e.errno or 0})
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def stdin_closed():
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable) and sys.stdin.readline() == ""


def churn(count):
    """A rolling window: always `count` maps open, the oldest closed as a new one is made."""
    import collections
    import time

    window = collections.deque()
    n = 0
    while True:
        window.append(create(f"pmt_churn{n % 10}", 2, 4, 8, 1 + n % 64))
        n += 1
        if len(window) > count:
            os.close(window.popleft())
        if n == count:
            reply({"event": "running"})
        if n % 10 == 0:
            if stdin_closed():
                return
            time.sleep(0.001)


def hold(groups, per):
    sleepers = []
    ids = []
    for g in range(groups):
        fds = [create(f"pmt_bench{k}", 2, 4, 8, 1) for k in range(per)]
        ids.extend(int(fdinfo(fd)["map_id"]) for fd in fds)
        sleepers.append(
            subprocess.Popen(
                ["sleep", "infinity"],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        )
        for fd in fds:
            os.close(fd)
    reply({"event": "ready", "pids": [p.pid for p in sleepers], "ids": ids})
    try:
        sys.stdin.read()  # until the parent closes stdin or kills us
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()


def main(argv):
    die_with_parent()
    # Before 5.11 map memory is charged to RLIMIT_MEMLOCK (64 KiB by default):
    # lift it as libbpf does for BPF programs (podmeter's too); where that is
    # not allowed, bpf(2) says EPERM if the limit is too low.
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass
    mode = argv[0] if argv else "serve"
    opts = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1, 2)}
    set_comm(opts.get("--comm", ""))
    if mode == "serve":
        serve()
    elif mode == "churn":
        churn(int(opts.get("--count", "20")))
    elif mode == "hold":
        hold(int(opts["--groups"]), int(opts["--per"]))
    else:
        sys.stderr.write(f"unknown mode {mode!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
