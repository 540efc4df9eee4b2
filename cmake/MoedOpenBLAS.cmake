# SPDX-License-Identifier: MIT
#
# OpenBLAS, the serial build: Debian's libopenblas-serial-dev. moed's worker
# pools own the parallelism (each worker runs its own BLAS calls), so
# OpenBLAS must start no threads of its own; a threaded build starts them
# when it loads, before main(), where they oversubscribe the cores and can
# take the SIGTERM meant for the drain (daemon/compute/blas_setup.h). Debian's
# serial build is not built with USE_LOCKING, so its table of work buffers is
# unguarded when workers call it at once: daemon/compute/blas_buffer_lock.c
# puts the lock back.
#
# Debian installs the serial, pthread and OpenMP builds side by side, each in
# /usr/lib/<multiarch>/openblas-<kind>/ and each with the SONAME
# libopenblas.so.0; the loader's own libopenblas.so.0 is an alternatives link
# that points at the pthread build whenever that one is installed too
# (priority 100 against the serial's 90), and other packages need it. So the
# programs link the serial file by its path and carry a RUNPATH to its
# folder, which the loader searches before its cache whatever the
# alternative points to: CMake's build RPATH gives it in the build tree, and
# moed_openblas_runpath() keeps it in installed programs and the .deb.
# LD_LIBRARY_PATH still comes first (RUNPATH, not RPATH): whoever points it at
# a threaded build is refused by moed at start (blas_setup.h).
#
#   moe_openblas   what moe_engine links: the serial build, or the pthread
#                  build for a program that sets its property
#                  MOE_OPENBLAS_PTHREAD (bench_engine's baseline measures
#                  OpenBLAS's own threads); MOE_OPENBLAS_PTHREAD_LIBRARY is
#                  empty when libopenblas-pthread-dev is not installed.
#
# A serial OpenBLAS elsewhere: -DMOE_OPENBLAS_SERIAL_LIBRARY=.../libopenblas.so
# -DMOE_OPENBLAS_INCLUDE_DIR=... (built with USE_THREAD=0; blas_buffer_lock.c
# supplies the lock that USE_LOCKING=1 would).

set(_openblas_libdir /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
set(_openblas_incdir /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
# NO_DEFAULT_PATH: the default path finds the alternatives link, whichever build it names
find_library(MOE_OPENBLAS_SERIAL_LIBRARY NAMES openblas
             HINTS ${_openblas_libdir}/openblas-serial NO_DEFAULT_PATH
             DOC "the serial OpenBLAS (libopenblas-serial-dev)")
find_path(MOE_OPENBLAS_INCLUDE_DIR cblas.h HINTS ${_openblas_incdir}/openblas-serial
          NO_DEFAULT_PATH DOC "cblas.h of the serial OpenBLAS")
if(NOT MOE_OPENBLAS_SERIAL_LIBRARY OR NOT MOE_OPENBLAS_INCLUDE_DIR)
  message(FATAL_ERROR
    "moed needs the serial OpenBLAS, and ${_openblas_libdir}/openblas-serial/libopenblas.so "
    "or ${_openblas_incdir}/openblas-serial/cblas.h is missing: install "
    "libopenblas-serial-dev (.ci/install-deps.sh does), or set "
    "MOE_OPENBLAS_SERIAL_LIBRARY and MOE_OPENBLAS_INCLUDE_DIR to a serial build")
endif()
get_filename_component(MOE_OPENBLAS_SERIAL_DIR ${MOE_OPENBLAS_SERIAL_LIBRARY} DIRECTORY)

find_library(MOE_OPENBLAS_PTHREAD_LIBRARY NAMES openblas
             HINTS ${_openblas_libdir}/openblas-pthread NO_DEFAULT_PATH
             DOC "the pthread OpenBLAS (libopenblas-pthread-dev), for bench_engine's baseline")

# IMPORTED_SONAME: the name the loader looks for in the RUNPATH folder
add_library(moe_openblas_serial SHARED IMPORTED)
set_target_properties(moe_openblas_serial PROPERTIES
  IMPORTED_LOCATION ${MOE_OPENBLAS_SERIAL_LIBRARY}
  IMPORTED_SONAME libopenblas.so.0
  INTERFACE_INCLUDE_DIRECTORIES ${MOE_OPENBLAS_INCLUDE_DIR})
set(_openblas_pick moe_openblas_serial)
if(MOE_OPENBLAS_PTHREAD_LIBRARY)
  # the same headers (Debian's differ in nothing): a program builds against either
  add_library(moe_openblas_pthread SHARED IMPORTED)
  set_target_properties(moe_openblas_pthread PROPERTIES
    IMPORTED_LOCATION ${MOE_OPENBLAS_PTHREAD_LIBRARY}
    IMPORTED_SONAME libopenblas.so.0
    INTERFACE_INCLUDE_DIRECTORIES ${MOE_OPENBLAS_INCLUDE_DIR})
  # $<TARGET_PROPERTY:...> in a link interface reads the program being linked
  set(_openblas_pick
      "$<IF:$<BOOL:$<TARGET_PROPERTY:MOE_OPENBLAS_PTHREAD>>,moe_openblas_pthread,moe_openblas_serial>")
endif()
add_library(moe_openblas INTERFACE)
target_link_libraries(moe_openblas INTERFACE ${_openblas_pick})

# moed_openblas_runpath(TARGET): the installed TARGET keeps its RUNPATH to
# the serial OpenBLAS (CMake drops the build tree's RPATH at install).
function(moed_openblas_runpath target)
  set_property(TARGET ${target} APPEND PROPERTY INSTALL_RPATH ${MOE_OPENBLAS_SERIAL_DIR})
endfunction()
