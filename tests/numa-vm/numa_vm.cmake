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
endif()

target_link_libraries(numa_vm_check PRIVATE ${MOE_NUMA_STATIC_LIB} Threads::Threads)

add_test(NAME numa_vm
         COMMAND bash ${_vm_dir}/run-vm-test.sh $<TARGET_FILE:numa_vm_check>)
set_tests_properties(numa_vm PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 RUN_SERIAL ON
                                        LABELS numa-vm)
