# SPDX-License-Identifier: MIT
#
# The Debian package moed_<version>_<arch>.deb, built by CPack's own DEB
# generator (no debhelper): `cmake --build build --target package` or
# `cd build && cpack -G DEB`. It holds everything `cmake --install` installs
# (moed, moectl, libmoe with its header, moe.pc and CMake package, the units,
# sysusers.d, tmpfiles.d, /etc/moed/moed.conf as a conffile, the man pages),
# installed with prefix /usr; systemd/CMakeLists.txt maps that prefix to
# /lib/systemd/system and /etc when installing. The maintainer scripts live
# in systemd/debian/. The version is project()'s.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME moed)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "moed")
set(MOED_PACKAGE_MAINTAINER "moed developers <moed@localhost>" CACHE STRING
    "Maintainer field of the Debian package")
set(CPACK_PACKAGE_CONTACT "${MOED_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "daemon serving the experts of Mixture-of-Experts models over shared memory")
# the long description; CPack puts the summary before it as the synopsis line
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "moed holds the expert weights of MoE layers on the NUMA nodes of a host
(or several hosts, over UCX), routes each token of a client's batch to its
experts and hands the combined result back. Clients link libmoe and pass
their batches through a shared-memory ring. The package has the daemon,
its systemd units (Type=notify, socket activation), moectl and libmoe with
its header, pkg-config file and CMake package.")
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# moed_0.1.0_amd64.deb rather than CPack's moed-0.1.0-Linux.deb
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)

# Files below /usr; the units and /etc/moed/moed.conf leave it
# (systemd/CMakeLists.txt). `cmake --install` keeps the configured prefix.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# One package with every component (service, tools, libmoe).
set(CPACK_DEB_COMPONENT_INSTALL OFF)
# Debian ships stripped binaries.
set(CPACK_STRIP_FILES ON)

# Depends from the binaries' ELF needs, as dpkg-shlibdeps (dpkg-dev) finds
# them: libopenblas0, libucx, liburing, libsystemd, libjansson, libnuma, ...
# moectl needs libmoe.so.1 from this very package: the shlibs file it gets
# (GENERATE_SHLIBS) also serves packages built against libmoe later.
# OpenBLAS's shlibs name only the metapackage libopenblas0, which any build
# satisfies; moed loads the serial one through its RUNPATH
# (cmake/MoedOpenBLAS.cmake) and refuses the others, so the package names
# it (CPack adds the computed Depends to this one).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libopenblas0-serial")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# systemd-sysusers, systemd-tmpfiles and the units need systemd; a machine
# without it can still use moed by hand
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")

# postinst, prerm, postrm; conffiles marks /etc/moed/moed.conf; triggers
# runs ldconfig for libmoe (CPack's own ldconfig postinst is replaced by ours).
set(_moed_debian ${PROJECT_SOURCE_DIR}/systemd/debian)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${_moed_debian}/postinst ${_moed_debian}/prerm ${_moed_debian}/postrm
    ${_moed_debian}/conffiles ${_moed_debian}/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
