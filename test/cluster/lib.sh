# Shared by test/cluster/up, down and apiserver (sourced, not run).
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this
cluster_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Our output goes to whoever started us, often a test's pipe. If that reader
# is gone, a write raises SIGPIPE: up turns it into an exit (so its cleanup
# runs), cleanups and down ignore it (so they finish), and log never fails.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2 || true; }
die() { log "error: $*"; exit 1; }

# Sets NAME and DATA (the cluster's data directory) from a cluster name.
set_name() {
	NAME=$1
	[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
		die "bad cluster name '$NAME' (letters, digits, '.', '_', '-'; at most 63)"
	DATA=/tmp/podmeter-test-cluster-$NAME
}

# Loads DATA/state.env (written by up) into the environment.
load_state() {
	[[ -f $DATA/state.env ]] || die "no cluster '$NAME' ($DATA/state.env is missing)"
	# shellcheck source=/dev/null
	source "$DATA/state.env"
}

# Takes the cluster's lock (fd 8) so up/down/apiserver of one name never
# overlap. With "or-proceed" (down), a lock still held after 120 s is ignored.
# shellcheck disable=SC2120
lock_cluster() {
	mkdir -p "$DATA"
	exec 8>"$DATA/.lock"
	flock -w 120 8 && return 0
	[[ ${1:-} == or-proceed ]] || die "timed out waiting for the lock $DATA/.lock"
	log "warning: $DATA/.lock is still held after 120 s; going on without it"
}

# True if PID is alive and is a process this cluster started: its command line
# names the data directory (guards against a recycled pid). Zombies count as dead.
ours() {
	local pid=${1:-} cmd
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmd == *"$DATA/"* ]]
}

# True if PID exists and is not a zombie. For a child just started with "&",
# which may not have exec'd its program yet (so ours() would not know it).
alive() {
	local pid=${1:-} stat
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# True once PID, which was ours, has exited: it is a zombie or gone, or the
# pid now names another program. An exiting process drops its memory (so an
# empty command line) before it becomes a zombie; that is not gone yet.
gone() {
	local pid=$1 cmd
	alive "$pid" || return 0
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
	[[ -n $cmd && $cmd != *"$DATA/"* ]]
}

# Stops PID if it is ours: SIGTERM, then SIGKILL after 15 s. Returns once it
# is a zombie or gone (not when its command line first reads empty).
stop_pid() { # <what> <pid>
	local what=$1 pid=${2:-} i
	ours "$pid" || return 0
	log "stopping $what (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		gone "$pid" && return 0
		sleep 0.1
	done
	log "$what (pid $pid) did not stop in 15 s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		gone "$pid" && return 0
		sleep 0.1
	done
	die "$what (pid $pid) is still running"
}

# Removes the data directories of clusters that nothing runs any more: a
# down that was itself killed half way (a test run's process group killed)
# leaves its directory. Only a directory whose lock is free (no up, down or
# apiserver of that name at work) and none of whose recorded processes is
# ours. Runs in subshells: NAME and DATA of the caller stay as they are.
sweep_stale_clusters() {
	local dir
	for dir in /tmp/podmeter-test-cluster-*/; do
		[[ -d $dir && ! -L ${dir%/} ]] || continue # a symlink is not a cluster's: left alone
		(
			DATA=${dir%/}
			exec 8>"$DATA/.lock"
			flock -n 8 || exit 0
			ETCD_PID='' APISERVER_PID='' WATCHDOG_PID=''
			# shellcheck source=/dev/null
			[[ -f $DATA/state.env ]] && source "$DATA/state.env"
			APISERVER_PID=${APISERVER_PID:-$(cat "$DATA/kube-apiserver.pid" 2>/dev/null || true)}
			for pid in "$ETCD_PID" "$APISERVER_PID" "$WATCHDOG_PID"; do
				ours "$pid" && exit 0
			done
			rm -rf "$DATA"
			log "removed $DATA (a cluster nothing runs any more)"
		)
	done
}

# True if something on this machine uses TCP port $1 (v4 or v6): in any state,
# or with a second argument "listen", only a listening socket.
port_in_use() {
	local hex st=
	hex=$(printf ':%04X' "$1")
	[[ ${2:-} == listen ]] && st=0A
	awk -v h="$hex" -v st="$st" 'substr($2, length($2) - 4) == h && (st == "" || $4 == st) { found = 1 } END { exit !found }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Prints a random free port in 20000-32767 (below Linux's ephemeral range),
# other than the ones given.
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12768))
		[[ " $* " == *" $p "* ]] && continue
		port_in_use "$p" || { printf '%s' "$p"; return 0; }
	done
	die "found no free TCP port"
}

# Starts kube-apiserver with the flags recorded in DATA/kube-apiserver.args and
# sets APISERVER_PID. Output goes to DATA/kube-apiserver.log.
launch_apiserver() {
	local args
	mapfile -t args <"$DATA/kube-apiserver.args"
	echo "--- $(date -u +%FT%TZ) start" >>"$DATA/kube-apiserver.log"
	setsid "$BIN_DIR/kube-apiserver" "${args[@]}" 8>&- </dev/null >>"$DATA/kube-apiserver.log" 2>&1 &
	APISERVER_PID=$!
	printf '%s\n' "$APISERVER_PID" >"$DATA/kube-apiserver.pid"
}

# Waits until kube-apiserver answers /readyz with ok. Returns 2 if it exited
# (with "address already in use" in its log: 3), 1 on timeout.
wait_apiserver_ready() { # [timeout seconds]
	local deadline=$((SECONDS + ${1:-90})) out
	while ((SECONDS < deadline)); do
		if ! alive "$APISERVER_PID"; then
			if tail -n 30 "$DATA/kube-apiserver.log" | grep -q 'address already in use'; then return 3; fi
			return 2
		fi
		out=$("$BIN_DIR/kubectl" --kubeconfig "$DATA/kubeconfig" --request-timeout=5s get --raw /readyz 2>/dev/null) || out=
		[[ $out == ok ]] && return 0
		sleep 0.3
	done
	return 1
}

apiserver_failed() { # <status from wait_apiserver_ready>
	case $1 in
	1) log "kube-apiserver did not become ready in time; last lines of $DATA/kube-apiserver.log:" ;;
	*) log "kube-apiserver exited; last lines of $DATA/kube-apiserver.log:" ;;
	esac
	tail -n 25 "$DATA/kube-apiserver.log" >&2 || true
}

# Prometheus's release from its Go module's version: module v0.X0Y.Z is
# release X.Y.Z (v0.315.0 -> 3.15.0).
prometheus_release() { # <module version>
	local minor=${1#v0.}
	minor=${minor%%.*}
	printf '%s' "${minor:0:1}.$((10#${minor:1})).${1##*.}"
}

# -ldflags that stamp a binary built on github.com/prometheus/common/version
# (Prometheus, promtool, the Prometheus Operator) with its release, as their
# own release builds do (`--version`, the build_info metric).
prometheus_version_ldflags() { # <release> <build date>
	local kv out=""
	for kv in "Version=$1" Branch=release BuildUser=podmeter-build-tools "BuildDate=$2"; do
		out+=" -X github.com/prometheus/common/version.$kv"
	done
	printf '%s' "$out"
}
