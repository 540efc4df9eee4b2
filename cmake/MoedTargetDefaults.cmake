# SPDX-License-Identifier: MIT
#
# moed_target_defaults(TARGET): the curated warning list, hardening and the
# sanitizer choice, applied per target rather than globally so that third-party
# code and test shims are never built with flags meant for ours.

set(MOE_WARNING_FLAGS
  -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wpointer-arith -Wcast-qual -Wundef -Wwrite-strings -Wformat=2 -Wvla
  -Werror=implicit-function-declaration -Werror=incompatible-pointer-types
  -Werror=return-type)

set(MOE_HARDEN_FLAGS -fno-common -fstack-protector-strong)
set(MOE_HARDEN_LINK_FLAGS -Wl,-z,relro,-z,now)

set(MOE_SANITIZE_FLAGS "")
if(MOE_SANITIZE)
  set(MOE_SANITIZE_FLAGS -fsanitize=${MOE_SANITIZE} -fno-omit-frame-pointer)
  if(MOE_SANITIZE MATCHES "undefined")
    list(APPEND MOE_SANITIZE_FLAGS -fno-sanitize-recover=undefined)
  endif()
endif()

# With MOE_FUZZ every target gets libFuzzer's coverage instrumentation, so
# that the fuzzers are guided by the library code they call, not only by
# their own few lines.
if(MOE_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MOE_FUZZ needs clang (CC=clang): libFuzzer is clang's")
  endif()
  list(APPEND MOE_SANITIZE_FLAGS -fsanitize=fuzzer-no-link)
endif()

function(moed_target_defaults target)
  target_compile_definitions(${target} PRIVATE _GNU_SOURCE)
  target_compile_options(${target} PRIVATE ${MOE_WARNING_FLAGS} ${MOE_HARDEN_FLAGS}
                         ${MOE_SANITIZE_FLAGS})
  if(MOE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  get_target_property(type ${target} TYPE)
  if(NOT type STREQUAL "STATIC_LIBRARY" AND NOT type STREQUAL "OBJECT_LIBRARY")
    target_link_options(${target} PRIVATE ${MOE_HARDEN_LINK_FLAGS} ${MOE_SANITIZE_FLAGS})
  endif()
endfunction()
