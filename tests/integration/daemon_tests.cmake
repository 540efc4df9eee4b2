# SPDX-License-Identifier: MIT
#
# Integration tests with a real moed and real client processes
# (included from tests/CMakeLists.txt). Each test gets the moed (and moectl)
# binaries on its command line, starts its own daemons on a socket in a
# private temporary folder (helpers/test_daemon.c) and requires that every
# daemon exits 0 on SIGTERM (a clean drain). They run serially: each one
# starts several client processes and loads the machine's cores.
#
# Sanitizer builds set MOE_SANITIZE_BUILD, and the tests scale their
# iteration counts down to stay within about a minute.

set(_it_dir ${CMAKE_CURRENT_SOURCE_DIR}/integration)
set(_it_env "")
if(MOE_SANITIZE)
  list(APPEND _it_env "MOE_SANITIZE_BUILD=1")
endif()

# The harness: start/stop a moed, its status JSON, reference results.
add_library(moe_test_daemon STATIC ${CMAKE_CURRENT_SOURCE_DIR}/helpers/test_daemon.c)
target_include_directories(moe_test_daemon PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/helpers)
target_link_libraries(moe_test_daemon PUBLIC moe moe_engine PkgConfig::JANSSON)
moed_target_defaults(moe_test_daemon)

# moed_daemon_it(NAME [SHM]): tests/integration/NAME.c, a CMocka executable;
# SHM: it also links moe_shm to speak the ring ABI without libmoe.
function(moed_daemon_it name)
  cmake_parse_arguments(ARG "SHM" "" "" ${ARGN})
  add_executable(${name} ${_it_dir}/${name}.c)
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/helpers
                                             ${PROJECT_SOURCE_DIR}/shm)
  target_link_libraries(${name} PRIVATE moe_test_daemon moe moe_engine PkgConfig::CMOCKA
                                        PkgConfig::JANSSON)
  if(ARG_SHM)
    target_link_libraries(${name} PRIVATE moe_shm)
  endif()
  moed_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name} $<TARGET_FILE:moed> $<TARGET_FILE:moectl>)
  set_tests_properties(${name} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 RUN_SERIAL ON
                                          ENVIRONMENT "${_it_env}")
endfunction()

moed_daemon_it(it_many_clients)
moed_daemon_it(it_hostile_client SHM)
moed_daemon_it(it_client_death)
moed_daemon_it(it_daemon_restart)
moed_daemon_it(it_store_restart)
moed_daemon_it(it_merged_stats)
moed_daemon_it(it_admission)
moed_daemon_it(it_session_memory)
moed_daemon_it(it_fairness)
moed_daemon_it(it_status_privacy)
moed_daemon_it(it_merge_precheck)
moed_daemon_it(it_merge_bitwise)
moed_daemon_it(it_expert_changes)
moed_daemon_it(it_round_robin)
moed_daemon_it(it_inline_runs)
moed_daemon_it(it_flipper SHM)
moed_daemon_it(it_systemd)
# its OpenBLAS tests: the folder moed must load from, the one it must refuse
target_compile_definitions(it_systemd PRIVATE MOE_OPENBLAS_SERIAL_DIR="${MOE_OPENBLAS_SERIAL_DIR}")
if(MOE_OPENBLAS_PTHREAD_LIBRARY)
  get_filename_component(_it_pthread_dir ${MOE_OPENBLAS_PTHREAD_LIBRARY} DIRECTORY)
  target_compile_definitions(it_systemd PRIVATE MOE_OPENBLAS_PTHREAD_DIR="${_it_pthread_dir}")
endif()
moed_daemon_it(it_metrics)
moed_daemon_it(it_half_experts)
target_link_libraries(it_flipper PRIVATE Threads::Threads)
# moectl top: batch frames (and a fake moed speaking moe_proto.h), and on a pty
moed_daemon_it(it_top SHM)
moed_daemon_it(it_top_pty)

# Every golden case served by a moed started on it, through moectl and check.py.
add_test(NAME it_daemon_golden
         COMMAND bash ${_it_dir}/it_daemon_golden.sh $<TARGET_FILE:moed>
                 $<TARGET_FILE:moectl> ${MOE_GOLDEN_DIR})
set_tests_properties(it_daemon_golden PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 RUN_SERIAL ON
                                                 ENVIRONMENT "${_it_env}")

# The status JSON against its documented schema (daemon/control/status.schema.json).
add_test(NAME it_status_schema
         COMMAND bash ${_it_dir}/it_status_schema.sh $<TARGET_FILE:moed> $<TARGET_FILE:moectl>
                 ${PROJECT_SOURCE_DIR}/daemon/control/status.schema.json)
set_tests_properties(it_status_schema PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 RUN_SERIAL ON
                                                 ENVIRONMENT "${_it_env}")
