# SPDX-License-Identifier: MIT
#
# The two-node NUMA test (included from tests/CMakeLists.txt): numa_vm_check,
# a statically linked program, run by run-vm-test.sh inside a QEMU guest with
# two NUMA nodes (software emulation; the guest kernel is fetched once with
# apt-get download and cached). ctest label "numa-vm", run alone (the guest
# keeps a core busy), skipped (77) where QEMU, a static busybox or a kernel
# cannot be had, which CI=true turns into a failure.
#
# Plain builds only: the program is static, and the sanitizer runtimes
# (ASan, UBSan, TSan, libFuzzer) neither link statically nor are wanted in the
# guest, so MOE_SANITIZE or MOE_FUZZ builds leave the target and test out.

if(MOE_SANITIZE OR MOE_FUZZ)
  return()
endif()
find_library(MOE_NUMA_STATIC_LIB NAMES libnuma.a)
if(NOT MOE_NUMA_STATIC_LIB)
  message(STATUS "numa_vm: no libnuma.a (libnuma-dev): the NUMA VM test is left out")
  return()
endif()

set(_vm_dir ${CMAKE_CURRENT_SOURCE_DIR}/numa-vm)
add_executable(numa_vm_check ${_vm_dir}/numa_vm_check.c)
# libnuma.a warns that getaddrinfo (its affinity code for network devices) needs
# glibc's shared NSS at run time: no check calls it, the warning is harmless.
target_link_options(numa_vm_check PRIVATE -static)
moed_target_defaults(numa_vm_check)

# (e) moed's own topology detection, once daemon/numa/topology.c exists:
# the topology module and the util/ files it may use, as a static library of
# its own (the linker takes only the objects the check needs) rather than
# moe_engine, so that the program needs no static OpenBLAS or jansson.
if(EXISTS ${PROJECT_SOURCE_DIR}/daemon/numa/topology.c)
  set(_vm_topo_sources)
  foreach(src numa/topology.c numa/topology_file.c util/diag.c util/parse.c)
    if(EXISTS ${PROJECT_SOURCE_DIR}/daemon/${src})
      list(APPEND _vm_topo_sources ${PROJECT_SOURCE_DIR}/daemon/${src})
    endif()
  endforeach()
  add_library(numa_vm_topology STATIC ${_vm_topo_sources})
  target_include_directories(numa_vm_topology PUBLIC ${PROJECT_SOURCE_DIR}/daemon)
  target_link_libraries(numa_vm_topology PUBLIC ${MOE_NUMA_STATIC_LIB})
  moed_target_defaults(numa_vm_topology)
  target_link_libraries(numa_vm_check PRIVATE numa_vm_topology)
  target_compile_definitions(numa_vm_check PRIVATE MOE_VM_HAVE_TOPOLOGY)

  # (f) the expert store's objects: store_object.c alone (no fill, no
  # io_uring), bound to a node of the detected topology. It checksums its
  # header with XXH64, so it needs xxHash's static archive.
  if(EXISTS ${PROJECT_SOURCE_DIR}/daemon/store/store_object.c)
    find_library(MOE_XXHASH_STATIC_LIB NAMES libxxhash.a)
    if(MOE_XXHASH_STATIC_LIB)
      add_library(numa_vm_store_object STATIC ${PROJECT_SOURCE_DIR}/daemon/store/store_object.c)
      target_link_libraries(numa_vm_store_object PUBLIC numa_vm_topology
                                                        ${MOE_XXHASH_STATIC_LIB})
      moed_target_defaults(numa_vm_store_object)
      target_link_libraries(numa_vm_check PRIVATE numa_vm_store_object)
      target_compile_definitions(numa_vm_check PRIVATE MOE_VM_HAVE_STORE_OBJECT)
    else()
      message(STATUS "numa_vm: no libxxhash.a (libxxhash-dev): the store_object check "
                     "(expert pages on their node) is left out")
    endif()
  endif()

  # (g) the NUMA pool: pool.c (the machinery) and pool_nodes.c (threads per
  # node, pinned), which need nothing beyond libc, pthreads and topology.
  if(EXISTS ${PROJECT_SOURCE_DIR}/daemon/pool/pool_nodes.c)
    add_library(numa_vm_pool STATIC ${PROJECT_SOURCE_DIR}/daemon/pool/pool.c
                                    ${PROJECT_SOURCE_DIR}/daemon/pool/pool_nodes.c)
    target_link_libraries(numa_vm_pool PUBLIC numa_vm_topology Threads::Threads)
    moed_target_defaults(numa_vm_pool)
    target_link_libraries(numa_vm_check PRIVATE numa_vm_pool)
    target_compile_definitions(numa_vm_check PRIVATE MOE_VM_HAVE_POOL)
  endif()
endif()

target_link_libraries(numa_vm_check PRIVATE ${MOE_NUMA_STATIC_LIB} Threads::Threads)

add_test(NAME numa_vm
         COMMAND bash ${_vm_dir}/run-vm-test.sh $<TARGET_FILE:numa_vm_check>)
set_tests_properties(numa_vm PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 RUN_SERIAL ON
                                        LABELS numa-vm)
