# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# netns.sh: several "hosts" on one machine, for multi-host tests of moed.
# Source it from a bash script (bash >= 4.3; `set -u` and `set -e` friendly),
# as root:
#
#     . tests/netns/netns.sh
#     netns_can_run                  # or exit 77 (ctest skip) with the reason
#     netns_setup 3                  # hosts 1..3; cleanup runs at exit
#     netns_spawn 1 ucx_perftest ...   # in the background, pid in NETNS_PID
#     netns_wait_port 1 13337
#     netns_exec 2 ucx_perftest "$(netns_addr 1)" ...
#     netns_loss 2 30; ...; netns_loss_off 2
#
# Topology. Each host is a network namespace with one veth device, whose
# other end is a port of a Linux bridge in a hub namespace: a switch. N veth
# pairs and one bridge rather than a full mesh of N(N-1)/2 pairs, so each host
# has one device and one address (UCX_NET_DEVICES is a single name, a fault on
# host i is a fault of its one link) and every host reaches every other one.
# Nothing is created in the caller's (root) namespace: the bridge and both
# ends of every veth pair live in the hub and host namespaces, so deleting
# those namespaces removes everything (devices, nft tables, qdiscs).
#
# Names (unique per run: $$ is the sourcing shell's pid; $NETNS_TAG overrides
# the "moe$$" prefix, at most 12 characters of [a-z0-9]):
#     host i's namespace   moe<pid><letter>   (host 1 = a, 2 = b, ...)
#     the hub namespace    moe<pid>hub
#     host i's device      moe<pid>h<i>       (in host i's namespace)
#     its bridge port      moe<pid>p<i>       (in the hub namespace)
#     the bridge           moe<pid>br         (in the hub namespace)
# Device names stay within the kernel's 15 characters (pids have at most 7
# digits). Addresses are fixed, $NETNS_SUBNET.<i>/24 (default 10.77.0.<i>):
# each namespace has its own addresses, so concurrent runs do not collide.
# Hosts have IPv4 only (IPv6 is turned off on their devices, so no router
# solicitations or DAD packets cross the faults and UCX finds one address).
#
# Host i's namespace, address and device: `netns_ns i`, `netns_addr i`,
# `netns_dev i`; also the bash arrays NETNS_NS[i], NETNS_ADDR[i], NETNS_DEV[i]
# and, for child processes, the exported variables NETNS_NS_<i>,
# NETNS_ADDR_<i>, NETNS_DEV_<i> and NETNS_N (the host count).
#
# UCX: it would find the other "hosts" on the same machine and quietly use
# shared memory (or CMA) between them, which no network fault affects.
# netns_exec and netns_spawn therefore set UCX_TLS=tcp and
# UCX_NET_DEVICES=<host's device> for every command; start every UCX process
# through them.
#
# Cleanup. netns_setup installs netns_cleanup as an EXIT, INT and TERM trap,
# chained before any trap the script had already set (which still runs).
# A trap the script sets after netns_setup replaces it: call netns_cleanup
# from that one. netns_cleanup ends the processes still running in the
# namespaces (SIGCONT, SIGTERM, then SIGKILL after 2 s: they were started by
# the test through netns_exec or netns_spawn) and deletes the namespaces;
# it is idempotent.
# A run killed with SIGKILL (a ctest timeout) leaves its namespaces behind:
# netns_sweep_stale removes the names of those whose pid no longer exists.
#
# Faults (every one is undone by its *_off/up/thaw twin, or by cleanup):
#     netns_loss i PERCENT   drop PERCENT% of host i's IPv4/IPv6 packets on
#                            its device, in each direction (nft, numgen random)
#     netns_slow i RATE      a token bucket (tc tbf) of RATE on both ends of
#                            host i's link, so its traffic is slow both ways
#     netns_down i           host i's bridge port down: a pulled cable
#     netns_freeze i         SIGSTOP every process in host i's namespace
# The kernel here has no netem, hence nft for loss and tbf for rate.
#
# Every function returns non-zero with a message on stderr ("netns: ...")
# when a command fails; none exits the script except netns_can_run.

# Sourced twice (a test and a bench script it sources): once is enough.
[ -z "${_NETNS_SH_LOADED:-}" ] || return 0
_NETNS_SH_LOADED=1

# The hosts of the current setup (index 0 unused).
declare -ga NETNS_NS=() NETNS_ADDR=() NETNS_DEV=() NETNS_PORT=()
declare -g NETNS_N=0 NETNS_HUB='' NETNS_BRIDGE='' NETNS_PID=''
: "${NETNS_SUBNET:=10.77.0}"
# Namespaces this shell created and has not deleted yet.
declare -ga _NETNS_CREATED=()
declare -g _NETNS_TRAPPED=0 _NETNS_PREV_EXIT='' _NETNS_PREV_INT='' _NETNS_PREV_TERM=''
# The nft table of netns_loss, in a host's namespace.
declare -gr _NETNS_LOSS_TABLE=moe_netns_loss

_netns_err() {
	echo "netns: $*" >&2
}

# _netns_do WHAT CMD...: run CMD; on failure print WHAT, the command and its
# error output, and return its status.
_netns_do() {
	local what=$1 out rc
	shift
	out=$("$@" 2>&1) && return 0
	rc=$?
	_netns_err "$what failed (exit $rc): $*${out:+: $out}"
	return "$rc"
}

# _netns_host I: I is a host of the current setup (else a message, 1).
_netns_host() {
	if [ "$NETNS_N" -eq 0 ]; then
		_netns_err "no hosts: call netns_setup first"
		return 1
	fi
	if ! [[ ${1:-} =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt "$NETNS_N" ]; then
		_netns_err "host '${1:-}' is not a host number from 1 to $NETNS_N"
		return 1
	fi
}

_netns_tag() {
	echo "${NETNS_TAG:-moe$$}"
}

netns_count() { echo "$NETNS_N"; }
netns_ns() { _netns_host "${1:-}" && echo "${NETNS_NS[$1]}"; }
netns_addr() { _netns_host "${1:-}" && echo "${NETNS_ADDR[$1]}"; }
netns_dev() { _netns_host "${1:-}" && echo "${NETNS_DEV[$1]}"; }
# netns_port I: host I's bridge port (its veth's other end, in the hub).
netns_port() { _netns_host "${1:-}" && echo "${NETNS_PORT[$1]}"; }
netns_hub() { echo "$NETNS_HUB"; }

# _netns_probe: why this machine cannot run the harness (on stdout), or
# nothing and 0 when it can. Tries everything in a throwaway namespace.
_netns_probe() {
	local t p out
	if [ "${BASH_VERSINFO[0]}" -lt 4 ] ||
		{ [ "${BASH_VERSINFO[0]}" -eq 4 ] && [ "${BASH_VERSINFO[1]}" -lt 3 ]; }; then
		echo "bash $BASH_VERSION is older than 4.3"
		return 1
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "not root (network namespaces, nft and tc need root)"
		return 1
	fi
	for t in ip:iproute2 tc:iproute2 ss:iproute2 nft:nftables ping:iputils-ping; do
		if ! command -v "${t%%:*}" >/dev/null; then
			echo "no ${t%%:*} (Debian package ${t#*:})"
			return 1
		fi
	done
	p="$(_netns_tag)probe"
	if ! out=$(ip netns add "$p" 2>&1); then
		echo "ip netns add does not work here: $out"
		return 1
	fi
	if ! out=$(ip -n "$p" link add "${p}0" type veth peer name "${p}1" 2>&1); then
		out="no veth devices: $out"
	elif ! out=$(ip -n "$p" link add "${p}b" type bridge 2>&1); then
		out="no bridge devices: $out"
	elif ! out=$(ip -n "$p" link set "${p}0" master "${p}b" 2>&1 &&
		ip -n "$p" link set "${p}0" up 2>&1 && ip -n "$p" link set "${p}1" up 2>&1); then
		out="cannot attach a veth to a bridge: $out"
	elif ! out=$(ip netns exec "$p" nft -f - 2>&1 <<-EOF
		table inet ${_NETNS_LOSS_TABLE} {
			chain output {
				type filter hook output priority 0; policy accept;
				oifname "${p}1" numgen random mod 100 < 50 drop
			}
		}
		EOF
	); then
		out="nftables (numgen random) does not work: $out"
	elif ! out=$(tc -n "$p" qdisc replace dev "${p}1" root tbf rate 1mbit burst 16kb \
		latency 100ms 2>&1); then
		out="tc tbf does not work: $out"
	else
		out=
	fi
	ip netns del "$p" 2>/dev/null
	if [ -n "$out" ]; then
		echo "$out"
		return 1
	fi
}

# netns_can_run: return 0 when this machine can run netns tests (root,
# ip netns, veth, bridge, nft with numgen, tc tbf, ss, ping); otherwise
# print why and exit 77 (ctest's skip). Under CI=true it exits 1 instead:
# CI runs as root and must not skip these tests silently.
netns_can_run() {
	local why
	why=$(_netns_probe) && return 0
	# In a chroot (/ not a mount point, as in a fresh-machine root) `ip netns
	# exec` and `ip -n` cannot remount / and /sys for the namespace, and UCX
	# finds a namespace's devices in its /sys only: no way round it, so a
	# skip even under CI=true. CI's machine has a real root and runs them.
	if ! mountpoint -q /; then
		echo "SKIP: netns tests need a real root, / is not a mount point here (a chroot): $why"
		exit 77
	fi
	if [ "${CI:-}" = true ]; then
		echo "FAIL: netns tests cannot run: $why (a skip is a failure under CI=true)"
		exit 1
	fi
	echo "SKIP: netns tests cannot run here: $why"
	exit 77
}

# netns_sweep_stale: delete the namespaces left by earlier runs that were
# killed before their cleanup (named moe<pid>... with no process <pid>).
# Only their names go: a process still running in one (none should) is not
# touched, and its namespace lives on, unnamed, until it exits.
netns_sweep_stale() {
	local ns pid
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		[[ $ns =~ ^moe([0-9]+)(hub|probe|[a-z])$ ]] || continue
		pid=${BASH_REMATCH[1]}
		[ -e "/proc/$pid" ] && continue
		if ip netns del "$ns" 2>/dev/null; then
			echo "netns: removed stale namespace $ns (pid $pid is gone)" >&2
		fi
	done
}

# _netns_prev_trap SIG: SIG's current trap command, unless it is ours.
_netns_prev_trap() {
	local cur
	cur=$(trap -p "$1")
	[ -n "$cur" ] || return 0
	eval "set -- $cur" # trap -- 'COMMAND' SIG
	case $3 in *_netns_on_*) return 0 ;; esac
	echo "$3"
}

_netns_on_exit() {
	netns_cleanup
	eval "$_NETNS_PREV_EXIT"
}

# On INT/TERM: clean up, run the script's own trap, then exit 128+signal
# (the EXIT trap then finds nothing left to remove).
_netns_on_signal() {
	local sig=$1 code=$2 prev
	netns_cleanup
	if [ "$sig" = INT ]; then prev=$_NETNS_PREV_INT; else prev=$_NETNS_PREV_TERM; fi
	eval "$prev"
	exit "$code"
}

_netns_install_trap() {
	[ "$_NETNS_TRAPPED" -eq 1 ] && return 0
	_NETNS_PREV_EXIT=$(_netns_prev_trap EXIT)
	_NETNS_PREV_INT=$(_netns_prev_trap INT)
	_NETNS_PREV_TERM=$(_netns_prev_trap TERM)
	trap _netns_on_exit EXIT
	trap '_netns_on_signal INT 130' INT
	trap '_netns_on_signal TERM 143' TERM
	_NETNS_TRAPPED=1
}

# netns_setup N: create hosts 1..N (N <= 26) joined by a bridge, each with
# lo up and its address on its device, and install the cleanup trap.
# Call it in the script's own shell, not in $(...) or a pipeline (the
# variables it sets would be lost). On failure it removes what it created.
netns_setup() {
	local n=${1:-} tag i ns dev port letters=abcdefghijklmnopqrstuvwxyz
	if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 26 ]; then
		_netns_err "netns_setup: host count '$n' is not a number from 1 to 26"
		return 1
	fi
	if [ "$NETNS_N" -ne 0 ] || [ ${#_NETNS_CREATED[@]} -ne 0 ]; then
		_netns_err "netns_setup: already set up (call netns_cleanup first)"
		return 1
	fi
	tag=$(_netns_tag)
	if ! [[ $tag =~ ^[a-z][a-z0-9]{0,11}$ ]]; then
		_netns_err "netns_setup: NETNS_TAG '$tag' is not 1-12 characters of [a-z0-9]"
		return 1
	fi
	if ! [[ $NETNS_SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; then
		_netns_err "netns_setup: NETNS_SUBNET '$NETNS_SUBNET' is not of the form A.B.C"
		return 1
	fi
	_netns_install_trap
	NETNS_HUB=${tag}hub
	NETNS_BRIDGE=${tag}br
	if ! _netns_setup_hosts "$n" "$tag" "$letters"; then
		_netns_err "netns_setup: giving up; removing what was created"
		netns_cleanup
		return 1
	fi
	NETNS_N=$n
	export NETNS_N
	for ((i = 1; i <= n; i++)); do
		export "NETNS_NS_$i=${NETNS_NS[$i]}" "NETNS_ADDR_$i=${NETNS_ADDR[$i]}" \
			"NETNS_DEV_$i=${NETNS_DEV[$i]}"
	done
}

_netns_add_ns() {
	_netns_do "creating namespace $1" ip netns add "$1" || return 1
	_NETNS_CREATED+=("$1")
	_netns_do "bringing lo up in $1" ip -n "$1" link set lo up
}

_netns_setup_hosts() {
	local n=$1 tag=$2 letters=$3 i ns dev port hub=$NETNS_HUB br=$NETNS_BRIDGE
	_netns_add_ns "$hub" || return 1
	# The hub is layer 2 only: no IPv6 link-local chatter from the bridge.
	if [ -e /proc/sys/net/ipv6 ]; then
		_netns_do "turning IPv6 off in $hub" ip netns exec "$hub" sh -c \
			'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 &&
			 echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6' || return 1
	fi
	_netns_do "creating bridge $br in $hub" ip -n "$hub" link add "$br" type bridge || return 1
	_netns_do "bringing $br up" ip -n "$hub" link set "$br" up || return 1
	for ((i = 1; i <= n; i++)); do
		ns=$tag${letters:i-1:1}
		dev=${tag}h$i
		port=${tag}p$i
		_netns_add_ns "$ns" || return 1
		_netns_do "creating veth $port ($hub) - $dev ($ns)" \
			ip -n "$hub" link add "$port" type veth peer name "$dev" netns "$ns" || return 1
		_netns_do "attaching $port to $br" ip -n "$hub" link set "$port" master "$br" || return 1
		_netns_do "bringing $port up" ip -n "$hub" link set "$port" up || return 1
		if [ -e /proc/sys/net/ipv6 ]; then
			_netns_do "turning IPv6 off on $dev" ip netns exec "$ns" \
				sh -c "echo 1 > /proc/sys/net/ipv6/conf/$dev/disable_ipv6" || return 1
		fi
		_netns_do "adding $NETNS_SUBNET.$i/24 to $dev" \
			ip -n "$ns" addr add "$NETNS_SUBNET.$i/24" dev "$dev" || return 1
		_netns_do "bringing $dev up" ip -n "$ns" link set "$dev" up || return 1
		NETNS_NS[i]=$ns
		NETNS_ADDR[i]=$NETNS_SUBNET.$i
		NETNS_DEV[i]=$dev
		NETNS_PORT[i]=$port
	done
}

# _netns_kill_ns NS: end every process in namespace NS (SIGCONT so stopped
# ones can die, SIGTERM, SIGKILL after 2 s).
_netns_kill_ns() {
	local ns=$1 pids i
	pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086 # a list of pids
	kill -CONT $pids 2>/dev/null
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null
	for ((i = 0; i < 20; i++)); do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[ -n "$pids" ] || return 0
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null
	for ((i = 0; i < 20; i++)); do
		[ -n "$(ip netns pids "$ns" 2>/dev/null)" ] || return 0
		sleep 0.1
	done
	_netns_err "processes $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')in $ns survive SIGKILL"
}

# netns_cleanup: end the processes in this run's namespaces and delete them
# (with them go the bridge, the veths, nft tables and qdiscs). Idempotent;
# returns 1 if a namespace could not be deleted.
netns_cleanup() {
	local ns rc=0 left=() i
	for ns in "${_NETNS_CREATED[@]}"; do
		_netns_kill_ns "$ns"
		if [ -e "/run/netns/$ns" ] && ! _netns_do "deleting namespace $ns" ip netns del "$ns"; then
			left+=("$ns")
			rc=1
		fi
	done
	_NETNS_CREATED=("${left[@]}")
	for ((i = 1; i <= NETNS_N; i++)); do
		unset "NETNS_NS_$i" "NETNS_ADDR_$i" "NETNS_DEV_$i"
	done
	NETNS_NS=() NETNS_ADDR=() NETNS_DEV=() NETNS_PORT=()
	NETNS_N=0
	return "$rc"
}

# netns_exec I CMD...: run CMD in host I's namespace with UCX_TLS=tcp and
# UCX_NET_DEVICES=<its device>, so UCX goes through host I's veth; its exit
# status. Shell functions are not visible there: `netns_exec I bash -c ...`.
# In the background use netns_spawn (`netns_exec ... &` gives in $! the pid
# of a subshell, not of CMD).
netns_exec() {
	_netns_host "${1:-}" || return 1
	local i=$1
	shift
	if [ $# -eq 0 ]; then
		_netns_err "netns_exec: no command"
		return 1
	fi
	ip netns exec "${NETNS_NS[$i]}" env UCX_TLS=tcp "UCX_NET_DEVICES=${NETNS_DEV[$i]}" "$@"
}

# netns_spawn I CMD...: netns_exec I CMD in the background, CMD's own pid in
# NETNS_PID (ip netns exec and env exec CMD in the same process, so a signal
# to NETNS_PID reaches CMD and `wait $NETNS_PID` gives its exit status).
# Redirections on the call apply to CMD: `netns_spawn 1 prog >log 2>&1`.
# Returns once the process is in host I's namespace (or has already exited),
# so that netns_freeze and netns_cleanup, which find processes by namespace,
# see it; 1 if it is in neither state after 5 s.
netns_spawn() {
	NETNS_PID=
	_netns_host "${1:-}" || return 1
	local i=$1 t
	shift
	if [ $# -eq 0 ]; then
		_netns_err "netns_spawn: no command"
		return 1
	fi
	ip netns exec "${NETNS_NS[$i]}" env UCX_TLS=tcp "UCX_NET_DEVICES=${NETNS_DEV[$i]}" "$@" &
	NETNS_PID=$!
	for ((t = 0; t < 100; t++)); do
		[ "$(ip netns identify "$NETNS_PID" 2>/dev/null)" != "${NETNS_NS[$i]}" ] || return 0
		kill -0 "$NETNS_PID" 2>/dev/null || return 0
		sleep 0.05
	done
	_netns_err "netns_spawn: process $NETNS_PID ($1) is not in ${NETNS_NS[$i]} after 5 s"
	return 1
}

# netns_reachable I J [SECONDS]: 0 when host J answers a ping from host I
# within SECONDS (default 2; pings 0.2 s apart), else 1.
netns_reachable() {
	_netns_host "${1:-}" && _netns_host "${2:-}" || return 1
	ip netns exec "${NETNS_NS[$1]}" ping -n -q -c 1 -i 0.2 -w "${3:-2}" "${NETNS_ADDR[$2]}" \
		>/dev/null 2>&1
}

# netns_wait_port I PORT [SECONDS]: wait until a TCP socket listens on PORT
# in host I's namespace (default 10 s); 1 with a message on timeout.
netns_wait_port() {
	_netns_host "${1:-}" || return 1
	local i=$1 port=${2:-} secs=${3:-10} t
	if ! [[ $port =~ ^[0-9]+$ ]]; then
		_netns_err "netns_wait_port: '$port' is not a port number"
		return 1
	fi
	for ((t = 0; t < secs * 10; t++)); do
		if [ -n "$(ip netns exec "${NETNS_NS[$i]}" ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
			return 0
		fi
		sleep 0.1
	done
	_netns_err "nothing listens on TCP port $port in host $i after $secs s"
	return 1
}

# netns_loss I PERCENT: drop PERCENT% (0-100) of the packets host I sends
# and, independently, of those it receives on its device (nft table
# moe_netns_loss in host I's namespace, rules `numgen random mod 100 <
# PERCENT drop`, a plain drop for 100; ARP is not dropped, IP is). A round
# trip then survives with probability (1-P/100)^2. Replaces an earlier
# netns_loss of I.
netns_loss() {
	_netns_host "${1:-}" || return 1
	local i=$1 pct=${2:-} dev match
	if ! [[ $pct =~ ^[0-9]+$ ]] || [ "$pct" -gt 100 ]; then
		_netns_err "netns_loss: '$pct' is not a percentage from 0 to 100"
		return 1
	fi
	dev=${NETNS_DEV[$i]}
	# numgen random mod 100 is 0..99, and nft refuses `< 100` as out of range.
	match="numgen random mod 100 < $pct"
	[ "$pct" -eq 100 ] && match=
	# The table is created (empty) and deleted first, so the new one replaces
	# an old one in the same atomic transaction.
	_netns_do "netns_loss: installing nft table in ${NETNS_NS[$i]}" \
		ip netns exec "${NETNS_NS[$i]}" nft -f - <<-EOF
		table inet ${_NETNS_LOSS_TABLE}
		delete table inet ${_NETNS_LOSS_TABLE}
		table inet ${_NETNS_LOSS_TABLE} {
			chain input {
				type filter hook input priority -300; policy accept;
				iifname "$dev" $match counter drop
			}
			chain output {
				type filter hook output priority -300; policy accept;
				oifname "$dev" $match counter drop
			}
		}
		EOF
}

# netns_loss_off I: remove host I's loss rules (nothing to do if none).
netns_loss_off() {
	_netns_host "${1:-}" || return 1
	local ns=${NETNS_NS[$1]}
	ip netns exec "$ns" nft list table inet "$_NETNS_LOSS_TABLE" >/dev/null 2>&1 || return 0
	_netns_do "netns_loss_off: deleting nft table in $ns" \
		ip netns exec "$ns" nft delete table inet "$_NETNS_LOSS_TABLE"
}

# _netns_rate_bytes RATE: tc's RATE (a number with bit, kbit, mbit, gbit,
# bps, kbps, mbps, gbps, or none for bit/s) in bytes per second.
_netns_rate_bytes() {
	local r=${1,,} num unit
	if ! [[ $r =~ ^([0-9]+)([kmg]?(bit|bps))?$ ]]; then
		return 1
	fi
	num=${BASH_REMATCH[1]}
	unit=${BASH_REMATCH[2]:-bit}
	case ${unit:0:1} in
	k) num=$((num * 1000)) ;;
	m) num=$((num * 1000000)) ;;
	g) num=$((num * 1000000000)) ;;
	esac
	case $unit in
	*bit) num=$((num / 8)) ;;
	esac
	[ "$num" -gt 0 ] || return 1
	echo "$num"
}

# netns_slow I RATE: limit host I's link to RATE (tc syntax: 10mbit, 500kbit,
# 1gbit, 2mbps) in both directions: a tbf qdisc on host I's device (what it
# sends) and on its bridge port (what it receives). Burst: 10 ms of RATE, at
# least 16 KiB (a few full frames); queue: 100 ms of RATE beyond the burst.
# Replaces an earlier netns_slow of I.
netns_slow() {
	_netns_host "${1:-}" || return 1
	local i=$1 rate=${2:-} bytes burst
	if ! bytes=$(_netns_rate_bytes "$rate"); then
		_netns_err "netns_slow: '$rate' is not a rate like 10mbit, 500kbit or 2mbps"
		return 1
	fi
	burst=$((bytes / 100))
	[ "$burst" -ge 16384 ] || burst=16384
	_netns_do "netns_slow: tbf on ${NETNS_DEV[$i]}" \
		tc -n "${NETNS_NS[$i]}" qdisc replace dev "${NETNS_DEV[$i]}" root \
		tbf rate "$rate" burst "$burst" latency 100ms || return 1
	_netns_do "netns_slow: tbf on ${NETNS_PORT[$i]}" \
		tc -n "$NETNS_HUB" qdisc replace dev "${NETNS_PORT[$i]}" root \
		tbf rate "$rate" burst "$burst" latency 100ms
}

# _netns_tbf_off NS DEV: delete DEV's tbf root qdisc, if it has one.
_netns_tbf_off() {
	tc -n "$1" qdisc show dev "$2" root 2>/dev/null | grep -q '^qdisc tbf' || return 0
	_netns_do "netns_slow_off: removing tbf from $2" tc -n "$1" qdisc del dev "$2" root
}

# netns_slow_off I: remove host I's rate limit (nothing to do if none).
netns_slow_off() {
	_netns_host "${1:-}" || return 1
	_netns_tbf_off "${NETNS_NS[$1]}" "${NETNS_DEV[$1]}" || return 1
	_netns_tbf_off "$NETNS_HUB" "${NETNS_PORT[$1]}"
}

# netns_down I: partition host I: its bridge port goes down, the switch end
# of its cable. Host I's device stays up with its address and routes but
# loses carrier; packets either way are dropped silently (no RST, no ICMP),
# TCP connections stay open and retransmit, as with a pulled cable.
netns_down() {
	_netns_host "${1:-}" || return 1
	_netns_do "netns_down: ${NETNS_PORT[$1]} down" \
		ip -n "$NETNS_HUB" link set "${NETNS_PORT[$1]}" down
}

# netns_up I: undo netns_down I.
netns_up() {
	_netns_host "${1:-}" || return 1
	_netns_do "netns_up: ${NETNS_PORT[$1]} up" ip -n "$NETNS_HUB" link set "${NETNS_PORT[$1]}" up
}

# netns_freeze I: SIGSTOP every process in host I's namespace (a hung host
# whose kernel still answers pings and ACKs); netns_thaw I: SIGCONT them.
netns_freeze() {
	_netns_host "${1:-}" || return 1
	local pids
	pids=$(ip netns pids "${NETNS_NS[$1]}") || return 1
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086 # a list of pids
	_netns_do "netns_freeze: SIGSTOP to host $1's processes" kill -STOP $pids
}

netns_thaw() {
	_netns_host "${1:-}" || return 1
	local pids
	pids=$(ip netns pids "${NETNS_NS[$1]}") || return 1
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	_netns_do "netns_thaw: SIGCONT to host $1's processes" kill -CONT $pids
}
