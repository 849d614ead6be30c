# loadstar_library(NAME folder DEPS ...): a static library of every .cc in `folder`
# (globbed, so adding a file needs no CMake edit). An empty folder gives an INTERFACE
# library so dependants still link.
function(loadstar_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  if(srcs)
    add_library(${name} STATIC ${srcs})
    target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# loadstar_test_suite(NAME folder DEPS ...): one gtest binary of every *_test.cc in the
# current folder; each test case is its own ctest entry.
function(loadstar_test_suite name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  if(NOT srcs)
    return()
  endif()
  add_executable(${name} ${srcs})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} loadstar_test_util GTest::gtest
                        GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    LOADSTAR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    LOADSTAR_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST
    PROPERTIES ENVIRONMENT "LOADSTAR_BIN=$<TARGET_FILE:loadstar>")
endfunction()
