#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Run statically linked test binaries inside a QEMU guest with two NUMA nodes
# (one CPU and 512 MiB each), so that memory binding, first-touch placement
# and CPU pinning are tested on real, if emulated, NUMA hardware even where
# the host has one node. Software emulation (TCG) is enough: no /dev/kvm.
#
# usage: run-vm-test.sh BINARY...
#
# Each BINARY must be statically linked (the guest has no libc besides
# busybox). The guest's /init runs them in order with no arguments and prints
# a line starting with `NUMA-VM-RESULT: PASS`, or `NUMA-VM-RESULT: FAIL`
# followed by the names of the binaries that exited non-zero, then powers off.
#
# The guest kernel is Debian's: the version linux-image-amd64 depends on is
# looked up with apt-cache, its package fetched with `apt-get download`
# (no root needed) and only boot/vmlinuz-* kept, in a cache folder
# ($MOE_VM_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/moed/numa-vm) that later
# runs reuse. $MOE_VM_KERNEL names a kernel image to use instead.
#
# Exit status: 0 when the guest printed PASS; 77 (skip) when the guest cannot
# run here (no qemu-system-x86_64, no static busybox, no kernel to be had),
# with the reason; 1 otherwise, with the guest's console output. Under CI=true
# a skip is a failure. $MOE_VM_TIMEOUT: seconds the guest may take (120).
set -u

# skip REASON: this machine cannot run the guest
skip() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL: $* (a skip is a failure under CI=true)"
		exit 1
	fi
	echo "SKIP: $*"
	exit 77
}
fail() {
	echo "FAIL: $*"
	exit 1
}

[ $# -ge 1 ] || fail "usage: $0 BINARY..."

# is_static FILE: FILE is an ELF executable with no program interpreter.
is_static() {
	command -v readelf >/dev/null || return 0 # cannot tell: let the guest say
	readelf -h "$1" >/dev/null 2>&1 || return 1
	! readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'
}

for bin in "$@"; do
	[ -x "$bin" ] || fail "$bin: not an executable file"
	is_static "$bin" || fail "$bin: not a statically linked executable (the guest has no libc)"
done

qemu=$(command -v qemu-system-x86_64) ||
	skip "no qemu-system-x86_64 (Debian package qemu-system-x86)"
busybox=
for b in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null)"; do
	if [ -n "$b" ] && [ -x "$b" ] && is_static "$b"; then
		busybox=$b
		break
	fi
done
[ -n "$busybox" ] || skip "no statically linked busybox (Debian package busybox-static)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moed-numa-vm.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

# --- The kernel ------------------------------------------------------------

cache=${MOE_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/moed/numa-vm}
# A user without a writable home (CI runners, nobody) caches in $TMPDIR.
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
	fallback=${TMPDIR:-/tmp}/moed-numa-vm-$(id -u)
	echo "note: cannot write $cache; the kernel is cached in $fallback"
	cache=$fallback
fi

# newest_cached: the most recently fetched kernel in the cache, if any.
newest_cached() {
	ls -1t "$cache"/vmlinuz-* 2>/dev/null | head -n 1
}

# fetch_kernel: print the path of a cached kernel for the version that
# linux-image-amd64 depends on now, fetching it when it is not cached yet.
# Says why on stderr and returns 1 when it cannot.
fetch_kernel() {
	local pkg version deb
	command -v apt-cache >/dev/null && command -v apt-get >/dev/null ||
		{ echo "no apt-cache/apt-get to look up Debian's kernel" >&2; return 1; }
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	[ -n "$pkg" ] ||
		{ echo "apt-cache knows no linux-image-amd64 (run apt-get update?)" >&2; return 1; }
	version=${pkg#linux-image-}
	if [ -s "$cache/vmlinuz-$version" ]; then
		echo "$cache/vmlinuz-$version"
		return 0
	fi
	mkdir -p "$cache" 2>/dev/null || { echo "cannot create $cache" >&2; return 1; }
	echo "fetching $pkg into $cache (once)" >&2
	mkdir "$tmp/deb"
	# apt-get download writes into the current folder; a subshell keeps ours.
	if ! (cd "$tmp/deb" && apt-get download -q "$pkg") >"$tmp/apt.log" 2>&1; then
		cat "$tmp/apt.log" >&2
		echo "apt-get download $pkg failed" >&2
		return 1
	fi
	deb=$(ls "$tmp/deb"/*.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ] ||
		! dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/deb" "./boot/vmlinuz-$version"; then
		echo "no boot/vmlinuz-$version in $pkg" >&2
		return 1
	fi
	# Another run may fetch at the same time: the rename makes either copy whole.
	cp "$tmp/deb/boot/vmlinuz-$version" "$cache/.vmlinuz-$version.$$" &&
		mv -f "$cache/.vmlinuz-$version.$$" "$cache/vmlinuz-$version" ||
		{ echo "cannot write $cache/vmlinuz-$version" >&2; return 1; }
	rm -rf "$tmp/deb"
	# Kernels of earlier versions are not needed any more (8 MB each).
	find "$cache" -maxdepth 1 -name 'vmlinuz-*' ! -name "vmlinuz-$version" -delete 2>/dev/null
	echo "$cache/vmlinuz-$version"
}

if [ -n "${MOE_VM_KERNEL:-}" ]; then
	[ -r "$MOE_VM_KERNEL" ] || fail "MOE_VM_KERNEL=$MOE_VM_KERNEL: cannot read it"
	kernel=$MOE_VM_KERNEL
elif ! kernel=$(fetch_kernel 2>"$tmp/fetch.err"); then
	# Offline or without apt: a kernel fetched earlier still does.
	kernel=$(newest_cached)
	if [ -z "$kernel" ]; then
		head -n -1 "$tmp/fetch.err" # apt's output, if it got that far
		skip "no guest kernel: $(tail -n 1 "$tmp/fetch.err")"
	fi
	echo "note: $(tail -n 1 "$tmp/fetch.err"); using the cached $kernel"
else
	cat "$tmp/fetch.err" # "fetching ..." on the first run
fi

# --- The initramfs ---------------------------------------------------------
#
# /bin/busybox, the binaries in /tests, and /init. Debian's kernel carries a
# built-in initramfs with /dev/console, so the kernel can open a console
# before /init runs; /init mounts devtmpfs over /dev and reopens the console
# there anyway, in case a kernel lacks it. /init also mounts a tmpfs on
# /dev/shm for checks that create files there (moed's expert store).

root=$tmp/root
mkdir -p "$root/bin" "$root/tests" "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
cp "$busybox" "$root/bin/busybox" || fail "cannot copy $busybox"
names=()
for bin in "$@"; do
	name=$(basename "$bin")
	cp "$bin" "$root/tests/$name" || fail "cannot copy $bin"
	names+=("$name")
done

cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# tmpfs where moed keeps its expert store (devtmpfs has no /dev/shm): shmem
# honours mbind() on a shared file mapping; the initramfs's rootfs may be
# ramfs, whose page cache follows the faulting task's policy instead
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The firmware's last line ("Booting from ROM...") may lack its newline.
echo
failed=
for t in ${names[*]}; do
	echo "== \$t"
	/tests/\$t
	rc=\$?
	echo "== \$t: exit \$rc"
	[ \$rc -eq 0 ] || failed="\$failed \$t"
done
echo
if [ -z "\$failed" ]; then
	echo "NUMA-VM-RESULT: PASS"
else
	echo "NUMA-VM-RESULT: FAIL\$failed"
fi
poweroff -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$tmp/initrd.gz" ||
	fail "cannot build the initramfs"

# --- The guest -------------------------------------------------------------
#
# QEMU exits 0 after a power-off and after a guest panic alike (panic=-1 and
# -no-reboot turn a panic into an exit), so the result line is the verdict.

vm_timeout=${MOE_VM_TIMEOUT:-120}
start=$(date +%s)
timeout "$vm_timeout" "$qemu" \
	-machine q35 -cpu max -smp 2,sockets=2 -m 1G \
	-object memory-backend-ram,id=m0,size=512M \
	-object memory-backend-ram,id=m1,size=512M \
	-numa node,nodeid=0,cpus=0,memdev=m0 \
	-numa node,nodeid=1,cpus=1,memdev=m1 \
	-kernel "$kernel" -initrd "$tmp/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1" \
	-nographic -no-reboot -nic none \
	</dev/null >"$tmp/console.raw" 2>"$tmp/qemu.err"
qemu_rc=$?
elapsed=$(($(date +%s) - start))

# The serial console ends lines with \r\n and carries terminal escapes.
tr -d '\r' <"$tmp/console.raw" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >"$tmp/console"

if grep -q '^NUMA-VM-RESULT: PASS$' "$tmp/console"; then
	sed -n '/^== /,/^NUMA-VM-RESULT:/p' "$tmp/console" | grep -v '^$'
	echo "PASS: guest with 2 NUMA nodes ran ${names[*]} ($(basename "$kernel"), ${elapsed}s)"
	exit 0
fi

echo "--- guest console ($(basename "$kernel"), ${elapsed}s) ---"
cat "$tmp/console"
echo "--- end of guest console ---"
if [ -s "$tmp/qemu.err" ]; then
	echo "--- qemu stderr ---"
	cat "$tmp/qemu.err"
fi
if [ "$qemu_rc" -eq 124 ]; then
	fail "the guest did not finish within ${vm_timeout}s"
fi
result=$(grep -a '^NUMA-VM-RESULT:' "$tmp/console" | head -n 1)
fail "${result:-no NUMA-VM-RESULT line from the guest (qemu exit $qemu_rc)}"
