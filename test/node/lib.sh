# Shared by test/node's scripts (sourced, not run).
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this
node_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# log, die, ours, alive, stop_pid, free_port: test/cluster's (ours() and
# stop_pid() check that a pid's command line names $DATA/).
# shellcheck source=../cluster/lib.sh
source "$node_here/../cluster/lib.sh"

# The cache of built tools and root filesystems: outside the repository,
# shared by every checkout on the machine, each entry keyed by its inputs.
node_cache() {
	local c
	if [[ -n ${PODMETER_NODE_CACHE:-} ]]; then
		c=$PODMETER_NODE_CACHE
	elif mkdir -p /var/cache/podmeter-test-node 2>/dev/null && [[ -w /var/cache/podmeter-test-node ]]; then
		c=/var/cache/podmeter-test-node
	else
		c=${XDG_CACHE_HOME:-$HOME/.cache}/podmeter-test-node
	fi
	mkdir -p "$c" || die "cannot create the cache directory $c (set PODMETER_NODE_CACHE to a writable directory)"
	printf '%s' "$c"
}

# debian_require <package>...: fails naming the Debian packages that are
# missing (make setup installs them; the test lanes install nothing).
# shellcheck source=../../scripts/debian.sh
source "$node_here/../../scripts/debian.sh"

# Takes an exclusive flock on FILE (fd 9) so one build of an entry runs at a
# time on the machine; a second caller waits and then finds the result.
lock_build() { # <lock file>
	exec 9>"$1"
	if ! flock -n 9; then
		log "another run holds $1; waiting for it"
		flock 9
	fi
}

# The version of a module required by one of the tool modules.
modversion() { # <go.mod> <module path>
	local v
	v=$(awk -v m="$2" '($1 == m && $2 ~ /^v/) { print $2; exit } ($1 == "require" && $2 == m) { print $3; exit }' "$1")
	[[ -n $v ]] || die "cannot find $2 in $1"
	printf '%s' "$v"
}

# Sets NAME (the node's, and its cluster's, name) and DATA, the node's
# directory: /tmp/podmeter-test-node-NAME (the cluster's is test/cluster's).
set_node_name() {
	NAME=$1
	[[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$ ]] ||
		die "bad node name '$NAME' (lower-case letters, digits and '-'; at most 42)"
	DATA=/tmp/podmeter-test-node-$NAME
}

# The node's lock (fd 8), as lock_cluster: up and down of one name never overlap.
lock_node() {
	mkdir -p "$DATA"
	exec 8>"$DATA/.lock"
	flock -w 120 8 && return 0
	[[ ${1:-} == or-proceed ]] || die "timed out waiting for the lock $DATA/.lock"
	log "warning: $DATA/.lock is still held after 120 s; going on without it"
}

save_node_state() {
	{
		local v
		for v in NAME DATA CLUSTER_NAME CLUSTER_BIN NODE_BIN KUBECONFIG_PATH QEMU_PID KCM_PID SCHEDULER_PID \
			PROMETHEUS_OPERATOR_PID WATCHDOG_PID APISERVER_PORT PROXY_HOST_PORT PROMETHEUS_PORT_FORWARD_PID \
			PROMETHEUS_PORT; do
			printf '%s=%q\n' "$v" "${!v:-}"
		done
	} >"$DATA/state.env.new"
	mv "$DATA/state.env.new" "$DATA/state.env"
}

load_node_state() {
	# shellcheck source=/dev/null
	source "$DATA/state.env"
}

# True once the Node reports Ready (within the timeout in seconds).
node_ready() { # <timeout s>
	local deadline=$((SECONDS + $1)) status
	while :; do
		status=$("$CLUSTER_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s get node "$NAME" \
			-o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || status=
		[[ $status == True ]] && return 0
		((SECONDS < deadline)) || return 1
		[[ -z ${QEMU_PID:-} ]] || alive "$QEMU_PID" || return 1
		sleep 1
	done
}
