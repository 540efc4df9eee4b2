# SPDX-License-Identifier: MIT
#
# Multi-host tests on one machine (included from tests/CMakeLists.txt): each
# host a network namespace, joined by veth pairs and a bridge
# (tests/netns/netns.sh). They need root, ip netns, nft and tc and exit 77
# (skip) where those are missing, which CI=true turns into a failure. Label
# "netns"; run alone: they start busy-polling UCX processes and time
# transfers.

set(_netns_dir ${CMAKE_CURRENT_SOURCE_DIR}/netns)

# The harness itself: reachability, every fault helper, UCX over the veths
# (ucx_perftest, through bench/ucx_baseline.sh's functions), cleanup. It
# runs nothing that was built, so only the plain build has it (test.sh would
# otherwise run it in each of its sanitizer builds too).
if(NOT MOE_SANITIZE AND NOT MOE_FUZZ)
  add_test(NAME it_netns_selftest COMMAND bash ${_netns_dir}/it_netns_selftest.sh)
  set_tests_properties(it_netns_selftest PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                                                    RUN_SERIAL TRUE LABELS netns)
endif()

# Three moed daemons serving one model over UCX (tests/netns/it_peers.sh):
# the golden cases split over the hosts bitwise equal to one host, then a
# peer killed, hung, partitioned, lossy and slow, both failure policies and
# a peer with another model. In every build: it runs moed.
add_test(NAME it_peers
         COMMAND bash ${_netns_dir}/it_peers.sh $<TARGET_FILE:moed> $<TARGET_FILE:moectl>
                 ${MOE_GOLDEN_DIR})
set_tests_properties(it_peers PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE
                                         LABELS netns ENVIRONMENT "${_it_env}")
