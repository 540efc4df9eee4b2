#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The Debian package (cmake/MoedPackage.cmake): cpack -G DEB builds
# moed_VERSION_ARCH.deb into a temporary folder, and without installing it
# on this host (no dpkg -i) the test checks
#   - its control fields: Package, Version (project()'s), Depends from
#     dpkg-shlibdeps (libopenblas0, libucx, liburing, libsystemd, ...) and
#     libopenblas0-serial, the OpenBLAS moed loads,
#     conffiles = /etc/moed/moed.conf, the maintainer scripts and the
#     ldconfig trigger;
#   - its file list: daemon, tool, libmoe (library, header, moe.pc, CMake
#     package), units in /lib/systemd/system, sysusers.d and tmpfiles.d in
#     /usr/lib, the configuration and the man pages;
#   - the files themselves, extracted with dpkg-deb -x into a temporary
#     root: the extracted moed checks the extracted configuration, the
#     extracted moectl runs with the extracted libmoe, both keep their
#     RUNPATH to the serial OpenBLAS and load it from there whatever the
#     system's libopenblas.so.0 is, moe.pc points into
#     the root, the units name /usr/sbin/moed, and systemd-analyze verify
#     accepts them with that path moved into the root (the only change) and
#     the man pages of their Documentation= found in the root's
#     /usr/share/man.
#
# usage: it_package.sh BUILD_DIR VERSION OPENBLAS_SERIAL_DIR
set -u
build=$1 version=$2 serial_blas_dir=$3

for tool in cpack dpkg-deb; do
	command -v "$tool" >/dev/null || { echo "SKIP: no $tool"; exit 77; }
done
# CPACK_DEBIAN_PACKAGE_SHLIBDEPS needs dpkg-shlibdeps (dpkg-dev) and file
for tool in dpkg-shlibdeps file; do
	command -v "$tool" >/dev/null || { echo "SKIP: no $tool (CPack's Depends need it)"; exit 77; }
done
[ -f "$build/CPackConfig.cmake" ] || { echo "FAIL: no $build/CPackConfig.cmake"; exit 1; }

tmp=$(mktemp -d /tmp/moed-package.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
failed() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# ---- build the package (into $tmp: the build tree keeps no package) ----
if ! (cd "$build" && cpack -G DEB -B "$tmp/out") >"$tmp/cpack.log" 2>&1; then
	echo "FAIL: cpack -G DEB:"
	cat "$tmp/cpack.log"
	exit 1
fi
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
deb=$tmp/out/moed_${version}_${arch}.deb
if [ ! -f "$deb" ]; then
	echo "FAIL: no $(basename "$deb"); cpack made:"
	ls "$tmp/out"
	exit 1
fi
ok "cpack made $(basename "$deb")"

# ---- control fields ----
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = moed ] || failed "Package is '$(field Package)', expected moed"
[ "$(field Version)" = "$version" ] || failed "Version is '$(field Version)', expected $version"
[ "$(field Architecture)" = "$arch" ] || failed "Architecture is '$(field Architecture)'"
depends=$(field Depends)
for lib in libc6 libopenblas0-serial libucx liburing libsystemd libjansson libnuma libxxhash; do
	[[ $depends == *"$lib"* ]] || failed "Depends lacks $lib: $depends"
done
ok "Depends: $depends"
conffiles=$(dpkg-deb --info "$deb" conffiles 2>&1)
[ "$conffiles" = /etc/moed/moed.conf ] ||
	failed "conffiles is '$conffiles', expected /etc/moed/moed.conf"
[[ $(dpkg-deb --info "$deb" triggers 2>&1) == *"activate-noawait ldconfig"* ]] ||
	failed "no ldconfig trigger (libmoe.so.1 is in /usr/lib)"
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
for script in postinst prerm postrm; do
	f=$tmp/control/$script
	if [ ! -x "$f" ]; then
		failed "no executable $script in the package"
	elif ! sh -n "$f"; then
		failed "$script is not valid sh"
	fi
done
grep -q 'systemd-sysusers.*moed\.conf' "$tmp/control/postinst" ||
	failed "postinst does not run systemd-sysusers moed.conf"
grep -q 'systemd-tmpfiles.*--create moed\.conf' "$tmp/control/postinst" ||
	failed "postinst does not run systemd-tmpfiles --create moed.conf"
ok "control: $(field Package) $(field Version), conffiles, scripts, trigger"

# The maintainer scripts' calls, run against stubs: PATH holds nothing but
# stubs that log their arguments, so no real command can touch this host.
# (postrm is only read: its purge deletes absolute paths.)
stubs=$tmp/stubs
mkdir "$stubs"
# deb-systemd-helper was-enabled answers $WAS_ENABLED (0: yes, as on a first install)
# shellcheck disable=SC2016 # the stubs' own variables, expanded when they run
for cmd in systemd-sysusers systemd-tmpfiles deb-systemd-helper deb-systemd-invoke systemctl; do
	printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$cmd" "$tmp/calls" \
		"$( [ "$cmd" = deb-systemd-helper ] && echo '[ "$2" != was-enabled ] || exit "${WAS_ENABLED:-0}"')" \
		>"$stubs/$cmd"
	chmod +x "$stubs/$cmd"
done
run_script() { # NAME ARGS...: the log of the calls it made
	: >"$tmp/calls"
	PATH=$stubs "$tmp/control/$1" "${@:2}" >/dev/null 2>&1 || echo "exit status $?" >>"$tmp/calls"
	cat "$tmp/calls"
}
systemd_up=no
[ -d /run/systemd/system ] && systemd_up=yes
calls=$(run_script postinst configure)
for want in "systemd-sysusers moed.conf" "systemd-tmpfiles --create moed.conf" \
	"deb-systemd-helper enable moed.socket" "deb-systemd-helper enable moed.service"; do
	grep -qxF "$want" <<<"$calls" || failed "postinst configure (a first install) did not run $want: $calls"
done
grep -qE 'start|exit status' <<<"$calls" && failed "postinst configure started moed or failed: $calls"
calls=$(WAS_ENABLED=1 run_script postinst configure 0.0.1)
grep -q "deb-systemd-helper enable " <<<"$calls" && failed "postinst upgrade enabled a unit the admin disabled: $calls"
grep -qxF "deb-systemd-helper update-state moed.service" <<<"$calls" ||
	failed "postinst upgrade did not update the units' state: $calls"
if [ $systemd_up = yes ]; then
	grep -q "systemctl try-restart moed.service" <<<"$calls" ||
		failed "postinst upgrade did not restart a running moed: $calls"
	calls=$(MOED_START=yes run_script postinst configure)
	grep -q "deb-systemd-invoke start moed.socket moed.service" <<<"$calls" ||
		failed "postinst with MOED_START=yes did not start moed: $calls"
	calls=$(run_script prerm remove)
	grep -q "systemctl stop moed.socket moed.service" <<<"$calls" ||
		failed "prerm remove did not stop moed: $calls"
fi
calls=$(run_script prerm upgrade)
grep -q "stop" <<<"$calls" && failed "prerm upgrade stopped moed (postinst restarts it): $calls"
grep -q 'rm -rf /var/lib/moed' "$tmp/control/postrm" || failed "postrm purge keeps /var/lib/moed"
ok "maintainer scripts: sysusers, tmpfiles, enable without start, upgrade, stop (systemd running: $systemd_up)"

# ---- file list ----
contents=$(dpkg-deb --contents "$deb" | awk '{ print $6 }' | sed 's|^\./|/|')
# /usr/lib, or Debian's multiarch folder when the build was configured for /usr
lib=$(grep -E '^/usr/lib(/[a-z0-9_]+-linux-[a-z0-9_]+)?/libmoe\.so\.1$' <<<"$contents" | head -n1)
libdir=${lib%/*}
[ -n "$lib" ] || { failed "the package lacks libmoe.so.1"; libdir=/usr/lib; }
for path in /usr/sbin/moed /usr/bin/moectl \
	"$libdir/libmoe.so" /usr/include/moe.h \
	"$libdir/pkgconfig/moe.pc" "$libdir/cmake/moe/moeConfig.cmake" \
	"$libdir/cmake/moe/moeConfigVersion.cmake" "$libdir/cmake/moe/moeTargets.cmake" \
	/lib/systemd/system/moed.service /lib/systemd/system/moed.socket \
	/lib/systemd/system/moed@.service /lib/systemd/system/moed@.socket \
	/usr/lib/sysusers.d/moed.conf /usr/lib/tmpfiles.d/moed.conf /etc/moed/moed.conf \
	/usr/share/man/man8/moed.8 /usr/share/man/man5/moed.conf.5 \
	/usr/share/man/man1/moectl.1; do
	grep -qxF "$path" <<<"$contents" || failed "the package lacks $path"
done
# nothing of the build machine's prefix or of the tests
stray=$(grep -E '^/usr/local/|^/usr/etc/|^/usr/lib/systemd/|/tests?/|/bench' <<<"$contents")
[ -z "$stray" ] || failed "unexpected paths in the package: $stray"
ok "contents: $(grep -vc '/$' <<<"$contents") files and links where they belong"

# ---- the extracted files ----
root=$tmp/root
dpkg-deb -x "$deb" "$root"
# moed links libmoe too (its metrics endpoint asks for the status as moectl does)
if out=$(LD_LIBRARY_PATH=$root$libdir "$root/usr/sbin/moed" --check-config \
	"$root/etc/moed/moed.conf" 2>&1); then
	ok "extracted moed --check-config: $out"
else
	failed "extracted moed --check-config of the extracted moed.conf: $out"
fi
if out=$(LD_LIBRARY_PATH=$root$libdir "$root/usr/bin/moectl" --help 2>&1) &&
	ldd_out=$(LD_LIBRARY_PATH=$root$libdir ldd "$root/usr/bin/moectl") &&
	grep -q "libmoe.so.1 => $root$libdir/libmoe.so.1" <<<"$ldd_out"; then
	ok "extracted moectl runs with the extracted libmoe.so.1"
else
	failed "extracted moectl with the extracted libmoe: $out $ldd_out"
fi
# the serial OpenBLAS, through RUNPATH: the loader's own libopenblas.so.0 is
# an alternatives link that names the pthread build whenever it is installed
for bin in /usr/sbin/moed /usr/bin/moectl; do
	runpath=$(readelf -d "$root$bin" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
	loaded=$(LD_LIBRARY_PATH=$root$libdir ldd "$root$bin" |
		awk '$1 == "libopenblas.so.0" { print $3 }')
	if [ "$runpath" = "$serial_blas_dir" ] && [[ $loaded == "$serial_blas_dir/"* ]]; then
		ok "extracted $bin loads $loaded (RUNPATH $runpath)"
	else
		failed "extracted $bin: RUNPATH '$runpath' (expected $serial_blas_dir), loads '$loaded'"
	fi
done
if command -v pkg-config >/dev/null; then
	inc=$(PKG_CONFIG_PATH=$root$libdir/pkgconfig pkg-config --variable=includedir moe)
	[ "$(realpath -m "$inc")" = "$root/usr/include" ] ||
		failed "moe.pc's includedir is $inc, expected $root/usr/include"
fi

units=$root/lib/systemd/system
for unit in moed.service moed@.service; do
	grep -q '^ExecStart=/usr/sbin/moed ' "$units/$unit" ||
		failed "$unit does not start /usr/sbin/moed: $(grep ^ExecStart= "$units/$unit")"
done
if ! command -v systemd-analyze >/dev/null; then
	echo "note: no systemd-analyze, the units are not verified"
else
	mkdir "$tmp/units"
	cp "$units"/moed* "$tmp/units/"
	cd "$tmp/units" || exit 1
	cp moed@.service moed@big.service
	cp moed@.socket moed@big.socket
	sed -i "s|^ExecStart=/usr/sbin/moed |ExecStart=$root/usr/sbin/moed |" ./*.service
	printf '[Service]\nExecStart=/bin/true\n' >probe.service
	if ! systemd-analyze verify --man=no ./probe.service >probe.log 2>&1; then
		echo "note: systemd-analyze verify does not run here, the units are not verified:"
		cat probe.log
	else
		for u in moed moed@big; do
			if out=$(MANPATH=$root/usr/share/man systemd-analyze verify --man=yes \
				"./$u.service" "./$u.socket" 2>&1) && [ -z "$out" ]; then
				ok "systemd-analyze verify $u.service $u.socket (man pages from the package)"
			else
				failed "systemd-analyze verify $u.service $u.socket: $out"
			fi
		done
	fi
fi
exit $fail
