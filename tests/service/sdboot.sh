#!/bin/bash
# SPDX-License-Identifier: MIT
#
# sdboot.sh: a throwaway systemd (the host's own, systemd 252) booted as
# PID 1 of a systemd-nspawn container over the host's root, for tests of
# moed's units under a real service manager. A bash library:
#
#   sdboot_can_run                 # or exit 77 (ctest skip) with the reason
#   sdboot_start [NSPAWN_OPTION...] # boot; waits for is-system-running
#   sdboot_exec CMD...             # run CMD inside (root, all namespaces)
#   sdboot_stop                    # power off, remove what we made on the host
#
# The container: --directory=/ --volatile=yes (a tmpfs root, the host's /usr
# read only, an empty /etc that systemd fills), a user namespace (its root is
# an unprivileged uid range on the host), a private network with loopback
# only, basic.target. Bind what the test needs with --bind-ro=SRC[:DST]
# options to sdboot_start: the units into /etc/systemd/system, sysusers.d
# files into /etc/sysusers.d, the build tree at its own path (its RPATHs).
# Nothing may live under /tmp (PrivateTmp= and nspawn's /tmp hide it).
#
# What it leaves on the host and removes: its cgroup (nspawn's supervisor and
# payload land below it, not in the root cgroup), and nspawn's scratch
# folders in /run/systemd. A watchdog kills a command stuck in a dead
# container; SDBOOT_TIMEOUT (default 240 s) bounds the whole container.
# Two containers at once are not supported (the /run/systemd clean-up).

: "${SDBOOT_TIMEOUT:=240}"
_sdboot_id=sdboot-$$
_sdboot_wrap=
_sdboot_leader=
_sdboot_log=
_sdboot_cgroups=()
_sdboot_had_run=()

# Why this machine cannot boot a container, or nothing.
_sdboot_probe() {
	[ "$(id -u)" -eq 0 ] || { echo "not root"; return 1; }
	command -v systemd-nspawn >/dev/null || { echo "no systemd-nspawn (systemd-container)"; return 1; }
	command -v nsenter >/dev/null || { echo "no nsenter"; return 1; }
	[ -x /lib/systemd/systemd ] || { echo "no /lib/systemd/systemd"; return 1; }
	return 0
}

# sdboot_can_run: as netns_can_run: in a chroot (/ not a mount point) nspawn
# cannot set up its root, a skip even under CI=true; otherwise a missing
# piece (not root, no systemd-nspawn) fails under CI=true and skips elsewhere.
sdboot_can_run() {
	local why
	# nspawn (and the unshare around it) cannot set up a root that is not a
	# mount point, as in a chroot (a fresh-machine root): whatever else holds
	if ! mountpoint -q /; then
		echo "SKIP: a container needs a real root, / is not a mount point here (a chroot)"
		exit 77
	fi
	why=$(_sdboot_probe) && return 0
	if [ "${CI:-}" = true ]; then
		echo "FAIL: cannot boot a systemd container: $why (a skip is a failure under CI=true)"
		exit 1
	fi
	echo "SKIP: cannot boot a systemd container here: $why"
	exit 77
}

sdboot_exec() {
	nsenter -t "$_sdboot_leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 TERM=dumb "$@"
}

sdboot_start() {
	local args cg ns state
	for d in nspawn nspawn-root nspawn-uid; do
		[ -e "/run/systemd/$d" ] && _sdboot_had_run+=("$d")
	done
	if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
		_sdboot_cgroups=("/sys/fs/cgroup/$_sdboot_id")
	else
		for h in systemd unified; do
			[ -w "/sys/fs/cgroup/$h" ] && _sdboot_cgroups+=("/sys/fs/cgroup/$h/$_sdboot_id")
		done
	fi
	_sdboot_log=$(mktemp /tmp/sdboot-console.XXXXXX)
	args=(--private-users=pick --private-users-ownership=off --directory=/ --volatile=yes
	      --boot --register=no --keep-unit --link-journal=no --private-network
	      --machine="$_sdboot_id" --console=passive --bind-ro=/etc/alternatives "$@"
	      systemd.firstboot=off systemd.unit=basic.target systemd.show_status=0
	      systemd.mask=tmp.mount systemd.mask=nftables.service)
	(
		for cg in "${_sdboot_cgroups[@]}"; do
			mkdir -p "$cg" && echo $BASHPID >"$cg/cgroup.procs"
		done
		exec timeout -s TERM -k 15 "$SDBOOT_TIMEOUT" unshare --mount --propagation private -- \
			systemd-nspawn "${args[@]}"
	) >"$_sdboot_log" 2>&1 </dev/null &
	_sdboot_wrap=$!
	for _ in $(seq 600); do
		ns=$(pgrep -x systemd-nspawn -P "$_sdboot_wrap" || true)
		[ -n "$ns" ] && _sdboot_leader=$(pgrep -P "$ns" | head -1)
		[ -n "$_sdboot_leader" ] && [ "$(cat "/proc/$_sdboot_leader/comm" 2>/dev/null)" = systemd ] && break
		_sdboot_leader=
		kill -0 "$_sdboot_wrap" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$_sdboot_leader" ]; then
		echo "sdboot: the container did not start:"
		cat "$_sdboot_log"
		return 1
	fi
	for _ in $(seq 300); do
		sdboot_exec test -S /run/systemd/private && break
		sleep 0.05
	done
	state=$(sdboot_exec timeout 90 systemctl is-system-running --wait 2>&1)
	if [ "$state" != running ]; then
		echo "sdboot: the container's systemd is $state:"
		sdboot_exec systemctl --no-pager --failed
	fi
	return 0
}

sdboot_stop() {
	local ns
	[ -n "$_sdboot_wrap" ] || return 0
	[ -n "$_sdboot_leader" ] && timeout 10 nsenter -t "$_sdboot_leader" -a \
		systemctl --no-block poweroff >/dev/null 2>&1
	for _ in $(seq 300); do
		kill -0 "$_sdboot_wrap" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$_sdboot_wrap" 2>/dev/null; then
		echo "sdboot: the container did not stop in 30 s, killing it"
		ns=$(pgrep -x systemd-nspawn -P "$_sdboot_wrap" || true)
		[ -n "$ns" ] && kill -TERM "$ns"
		sleep 5
		# SIGKILL to its PID 1 ends the container's whole pid namespace
		[ -n "$_sdboot_leader" ] && kill -KILL "$_sdboot_leader" 2>/dev/null
		[ -n "$ns" ] && kill -KILL "$ns" 2>/dev/null
	fi
	wait "$_sdboot_wrap" 2>/dev/null
	for cg in "${_sdboot_cgroups[@]}"; do
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	rm -rf "/run/systemd/nspawn/propagate/$_sdboot_id"
	for d in nspawn nspawn-root nspawn-uid; do
		[[ " ${_sdboot_had_run[*]} " == *" $d "* ]] && continue
		[ "$d" = nspawn-uid ] && find /run/systemd/nspawn-uid -type f -empty -delete 2>/dev/null
		[ "$d" = nspawn ] && rmdir /run/systemd/nspawn/propagate 2>/dev/null
		rmdir "/run/systemd/$d" 2>/dev/null
	done
	rm -f "$_sdboot_log"
	_sdboot_wrap=
}
