# Debian packages: the one place podmeter's scripts install or check them
# (sourced, not run). `make setup` installs every package of
# scripts/debian-packages; the test scripts only check theirs
# (debian_require) and name what is missing, so nothing installs system
# packages while the test lanes run side by side.
# shellcheck shell=bash

debian_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# One install at a time on the machine, whichever checkout or script runs it.
DEBIAN_LOCK=${PODMETER_APT_LOCK:-/run/lock/podmeter-apt.lock}
# Each package podmeter installed, a line each: what a cold-run rehearsal
# (scripts/rehearse-cold-run) purges to stand for a fresh machine.
DEBIAN_INSTALLED=/var/lib/podmeter-setup/debian-installed

# The packages of scripts/debian-packages, in file order: all of them, or
# those of the groups named (build, run, test).
debian_packages() { # [group...]
	sed -e 's/#.*//' "$debian_here/debian-packages" |
		awk -v groups=" $* " 'NF && (groups == "  " || index(groups, " " $2 " ")) { print $1 }'
}

# Prints the packages among the arguments that are not installed.
debian_missing() { # <package>...
	local p
	for p in "$@"; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || printf '%s\n' "$p"
	done
}

# Installs the packages that are missing. Waits for the machine's package lock
# (another podmeter install: a flock; anything else holding dpkg's lock:
# apt's own lock timeout), runs `apt-get update` once when an install fails
# (package lists absent or stale), and on failure names the packages and
# keeps the log.
debian_install() { # <package>...
	local want
	mapfile -t want < <(debian_missing "$@")
	((${#want[@]})) || return 0
	if ((EUID != 0)); then
		printf 'debian: need root to install %s (run: sudo make setup)\n' "${want[*]}" >&2
		return 1
	fi
	(
		exec 7>"$DEBIAN_LOCK"
		if ! flock -n 7; then
			printf 'debian: another install holds %s; waiting for it\n' "$DEBIAN_LOCK" >&2
			flock 7
		fi
		# The one before us may have installed them.
		mapfile -t want < <(debian_missing "${want[@]}")
		((${#want[@]})) || exit 0
		printf 'debian: installing %s\n' "${want[*]}" >&2
		local log apt=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
		log=$(mktemp /tmp/podmeter-apt.XXXXXX.log)
		export DEBIAN_FRONTEND=noninteractive
		if ! "${apt[@]}" install --no-install-recommends "${want[@]}" >"$log" 2>&1; then
			printf 'debian: install failed; running apt-get update once and trying again\n' >&2
			if ! { "${apt[@]}" update >>"$log" 2>&1 &&
				"${apt[@]}" install --no-install-recommends "${want[@]}" >>"$log" 2>&1; }; then
				tail -n 20 "$log" | sed 's/^/  | /' >&2
				printf 'debian: error: apt-get could not install %s (whole log: %s)\n' "${want[*]}" "$log" >&2
				exit 1
			fi
		fi
		rm -f "$log"
		mkdir -p "${DEBIAN_INSTALLED%/*}"
		printf '%s\n' "${want[@]}" >>"$DEBIAN_INSTALLED"
		mapfile -t want < <(debian_missing "${want[@]}")
		if ((${#want[@]})); then
			printf 'debian: error: apt-get succeeded but %s is still not installed\n' "${want[*]}" >&2
			exit 1
		fi
	)
}

# Purges the packages (and what only they pulled in), under the same lock.
debian_purge() { # <package>...
	(($#)) || return 0
	(
		exec 7>"$DEBIAN_LOCK"
		flock 7
		local log
		log=$(mktemp /tmp/podmeter-apt.XXXXXX.log)
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get -q -y -o DPkg::Lock::Timeout=600 purge --autoremove "$@" >"$log" 2>&1; then
			tail -n 20 "$log" | sed 's/^/  | /' >&2
			printf 'debian: error: apt-get could not purge %s (whole log: %s)\n' "$*" "$log" >&2
			exit 1
		fi
		rm -f "$log"
		if [[ -f $DEBIAN_INSTALLED ]]; then
			grep -vxF -f <(printf '%s\n' "$@") "$DEBIAN_INSTALLED" >"$DEBIAN_INSTALLED.new" || true
			mv "$DEBIAN_INSTALLED.new" "$DEBIAN_INSTALLED"
		fi
	)
}

# Fails, naming them, when any of the packages is missing: for scripts that
# run inside `make test`, which installs nothing while its lanes run.
debian_require() { # <package>...
	local missing
	mapfile -t missing < <(debian_missing "$@")
	((${#missing[@]})) || return 0
	printf '%s: error: Debian packages missing: %s (run: sudo make setup; or: sudo scripts/debian-install %s)\n' \
		"${0##*/}" "${missing[*]}" "${missing[*]}" >&2
	return 1
}
