#!/bin/bash
# SPDX-License-Identifier: MIT
#
# moed.service under a real systemd (252, booted in a container over the
# host's root by sdboot.sh), with the unit's whole sandbox, as a package
# would install it: sysusers.d's user, moed.socket, /etc/moed/moed.conf and
# a drop-in that turns on UCX (listen) and the metrics endpoint, and a
# watchdog of 2 s (a drop-in of the unit). It checks:
#   - start: Type=notify readiness (systemctl start returns once READY=1),
#     STATUS= in systemctl status, running as user moed;
#   - clients: moectl status and a workload through shared memory as root;
#     a process in group moed may connect, one outside it may not (0660);
#   - the watchdog: still active, never restarted, after several timeouts;
#   - reload: systemctl reload is logged as applied;
#   - metrics over HTTP from inside the sandbox;
#   - no UCX error under MemoryDenyWriteExecute and the system-call filter;
#   - stop: a clean drain (exit 0), and a second start re-attaches the expert
#     store the first left in /dev/shm instead of reading the weights again;
#   - the fd store: with the objects' files removed, a restart and a crash
#     (SIGKILL, Restart=on-failure) re-attach them from systemd's fd store.
#
# usage: it_service_unit.sh BUILD_DIR SOURCE_DIR
set -u
build=$(readlink -f "$1") src=$(readlink -f "$2")
here=$(dirname "$(readlink -f "$0")")
. "$here/sdboot.sh"
sdboot_can_run

stage=$(mktemp -d /tmp/it-service-unit.XXXXXX)
trap 'sdboot_stop; rm -rf "$stage"' EXIT
sed "s|^ExecStart=[^ ]*/moed |ExecStart=$build/daemon/moed |" "$build/systemd/moed.service" \
	>"$stage/moed.service"
mkdir "$stage/moed.service.d" "$stage/moed.conf.d"
# LeakSanitizer stops the world with ptrace, which the system-call filter
# forbids: in a sanitizer build the leak check is the other tests' job
printf '[Service]\nWatchdogSec=2s\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' \
	>"$stage/moed.service.d/10-test.conf"
printf 'listen = 127.0.0.1:7390\nmetrics_listen = 127.0.0.1:9464\n' \
	>"$stage/moed.conf.d/10-test.conf"

sdboot_start \
	--bind-ro="$stage/moed.service:/etc/systemd/system/moed.service" \
	--bind-ro="$stage/moed.service.d:/etc/systemd/system/moed.service.d" \
	--bind-ro="$src/systemd/moed.socket:/etc/systemd/system/moed.socket" \
	--bind-ro="$src/systemd/moed.sysusers:/etc/sysusers.d/moed.conf" \
	--bind-ro="$src/systemd/moed.tmpfiles:/etc/tmpfiles.d/moed.conf" \
	--bind-ro="$src/systemd/moed.conf:/etc/moed/moed.conf" \
	--bind-ro="$stage/moed.conf.d:/etc/moed/moed.conf.d" \
	--bind-ro="$build:$build" || exit 1

fail=0
check() { # check WHAT COMMAND...: run inside; a failure is reported, the test goes on
	local what=$1 out
	shift
	if out=$(sdboot_exec "$@" 2>&1); then
		echo "ok: $what"
	else
		echo "FAIL: $what:"
		echo "$out" | tail -20
		fail=1
	fi
}
moectl=$build/daemon/moectl

# systemd-sysusers ran at boot (sysinit); tmpfiles made /run/moed
check "the user moed exists" getent passwd moed
check "moed.socket listens" systemctl start moed.socket
check "moed.service starts (READY=1)" systemctl start moed.service
check "active" systemctl is-active --quiet moed.service
check "STATUS= says serving" sh -c \
	"systemctl show -P StatusText moed.service | grep -q '^serving'"
check "runs as moed" sh -c \
	"ps -o user= -p \$(systemctl show -P MainPID moed.service) | grep -qx moed"
check "moectl status (root)" "$moectl" --socket /run/moed/moed.sock status
check "a workload through shared memory" "$moectl" --socket /run/moed/moed.sock workload \
	--batches 20
gid=$(sdboot_exec getent group moed | cut -d: -f3)
check "a member of group moed may connect" setpriv --reuid=65534 --regid=65534 \
	--groups="$gid" "$moectl" --socket /run/moed/moed.sock status
check "one outside it may not" sh -c \
	"! setpriv --reuid=65534 --regid=65534 --clear-groups $moectl --socket /run/moed/moed.sock status"

sleep 5 # two and a half watchdog timeouts
check "alive after the watchdog's timeouts" systemctl is-active --quiet moed.service
check "never restarted" sh -c "[ \"\$(systemctl show -P NRestarts moed.service)\" = 0 ]"
check "systemctl reload" systemctl reload moed.service
check "the reload logged" sh -c "journalctl -u moed.service | grep -q 'reload: no setting changed'"
check "metrics over HTTP" bash -c \
	"exec 3<>/dev/tcp/127.0.0.1/9464; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; \
	 head -1 <&3 | grep -q '200 OK'" 2>/dev/null
check "no UCX error or warning in the journal" sh -c \
	"! journalctl -u moed.service | grep -E 'UCX +(ERROR|WARN)'"

check "stop drains (exit 0)" systemctl stop moed.service
check "exit status 0" sh -c "[ \"\$(systemctl show -P ExecMainStatus moed.service)\" = 0 ]"
check "started again" systemctl start moed.service
check "the store re-attached" sh -c "journalctl -u moed.service | grep -q 're-attached'"
# the fd store: the objects' files removed while moed runs; a restart (and a
# crash, which Restart=on-failure follows) takes them from systemd instead
check "the store's objects are in the fd store" sh -c \
	"[ \"\$(systemctl show -P NFileDescriptorStore moed.service)\" -ge 1 ]"
check "the files removed" sh -c "rm -f /dev/shm/moed-moed-*.node*"
check "restarted" systemctl restart moed.service
check "re-attached from the fd store" sh -c \
	"journalctl -u moed.service | grep -q \"from systemd's fd store\""
check "a workload after the restart" "$moectl" --socket /run/moed/moed.sock workload --batches 5
check "killed" systemctl kill -s KILL moed.service
check "restarted by systemd" sh -c \
	"for i in \$(seq 100); do [ \"\$(systemctl show -P NRestarts moed.service)\" = 1 ] &&
	 systemctl is-active --quiet moed.service && exit 0; sleep 0.1; done; exit 1"
check "re-attached from the fd store again" sh -c \
	"[ \"\$(journalctl -u moed.service | grep -c \"from systemd's fd store\")\" -ge 2 ]"
check "stopped again" systemctl stop moed.service

if [ $fail -ne 0 ]; then
	echo "--- journal of moed.service:"
	sdboot_exec journalctl --no-pager -u moed.service | tail -40
fi
exit $fail
