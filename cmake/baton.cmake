# Helpers shared by every module's CMakeLists.txt.

# baton_module(<name> SOURCES ... [LIBS ...]): a static library src/<name> whose public
# header is <name>/<name>.h, included as "<name>/<name>.h" from src/.
function(baton_module name)
  cmake_parse_arguments(M "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} STATIC ${M_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR}/src)
  if(M_LIBS)
    target_link_libraries(${name} PUBLIC ${M_LIBS})
  endif()
endfunction()

# baton_test(<name> SOURCES ... [LIBS ...] [TIMEOUT s] [LABELS ...] [ARGS ...]):
# a test executable registered with CTest. Tests include "test.h" (tests/harness/).
function(baton_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/harness
                             ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE ${T_LIBS} testharness)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT})
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# baton_program(<name> SOURCES ... [LIBS ...]): an executable in src/cmd/<name>.
function(baton_program name)
  cmake_parse_arguments(P "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${P_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE ${P_LIBS})
endfunction()

# baton_fuzz(<name> SOURCES ... [LIBS ...] [SECONDS n] [CORPUS dir]): a libFuzzer target, built
# only in the clang build (BATON_FUZZ=ON). It is registered with CTest under the label "fuzz"
# and runs for SECONDS (default 20) from its checked-in corpus; `make fuzz FUZZ_SECONDS=n`
# runs every target for longer. New inputs go to a scratch copy, never into the repo.
# `make test` fuzzes from a fixed seed (FUZZ_SEED, default 1), so what CI explores is a prefix
# of what a longer local run with the same seed explores; `make fuzz` picks random seeds.
function(baton_fuzz name)
  cmake_parse_arguments(F "" "SECONDS;CORPUS" "SOURCES;LIBS" ${ARGN})
  if(NOT BATON_FUZZ)
    return()
  endif()
  if(NOT F_SECONDS)
    set(F_SECONDS 20)
  endif()
  add_executable(${name} ${F_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  set(work ${CMAKE_CURRENT_BINARY_DIR}/${name}.corpus)
  set(seeds "")
  if(F_CORPUS)
    set(seeds ${F_CORPUS})
  endif()
  add_test(NAME ${name}
           COMMAND sh -c "mkdir -p '${work}' && exec \"$0\" -seed=\${FUZZ_SEED:-1} -max_total_time=\${FUZZ_SECONDS:-${F_SECONDS}} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 '${work}' ${seeds}"
                   $<TARGET_FILE:${name}>)
  set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT 7200)
endfunction()
