# The dependency graph of the source folders (docs/TEAM-NOTES.md, "Layering"), checked
# over every #include "folder/..." line. Nothing may include a folder above it:
#
#   deploy -> daemon -> loader -> store -> quant -> base
#                  \-> proto     kernels -> quant, base     (kernels is a leaf beside store)
#
# Run at configure time (the top-level CMakeLists.txt includes it: an upward include fails
# the configure) and as the ctest `layering` (cmake -P, so an include added after the last
# configure fails the tests too). tests/ and bench/ may include anything.
# Script mode: cmake -DLOADSTAR_LAYERING_SOURCE_DIR=<repo> -P cmake/check_layering.cmake
if(NOT DEFINED LOADSTAR_LAYERING_SOURCE_DIR)
  if(DEFINED PROJECT_SOURCE_DIR)
    set(LOADSTAR_LAYERING_SOURCE_DIR ${PROJECT_SOURCE_DIR})
  else()
    message(FATAL_ERROR "check_layering: set LOADSTAR_LAYERING_SOURCE_DIR")
  endif()
endif()

# Folder -> the folders its files may include (itself always). `loadstar/` and `etcd/` are
# the generated protobuf headers of proto/.
set(_allowed_base    )
set(_allowed_quant   base)
set(_allowed_kernels base quant)
set(_allowed_store   base quant)
set(_allowed_loader  base quant store)
set(_allowed_proto   )
set(_allowed_daemon  base quant store loader proto)
set(_allowed_deploy  base quant store loader proto daemon)
set(_folders base quant kernels store loader proto daemon deploy)

set(_violations "")
foreach(_folder IN LISTS _folders)
  file(GLOB_RECURSE _files
       "${LOADSTAR_LAYERING_SOURCE_DIR}/${_folder}/*.h"
       "${LOADSTAR_LAYERING_SOURCE_DIR}/${_folder}/*.cc"
       "${LOADSTAR_LAYERING_SOURCE_DIR}/${_folder}/*.cu")
  set(_ok ${_folder} ${_allowed_${_folder}})
  foreach(_file IN LISTS _files)
    file(STRINGS "${_file}" _includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"[A-Za-z0-9_]+/")
    foreach(_line IN LISTS _includes)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([A-Za-z0-9_]+)/.*" "\\1" _target
             "${_line}")
      if(_target STREQUAL "loadstar" OR _target STREQUAL "etcd")
        set(_target proto)
      endif()
      list(FIND _folders "${_target}" _is_ours)
      if(_is_ours EQUAL -1 AND NOT _target STREQUAL "tests" AND NOT _target STREQUAL "bench")
        continue()  # a third-party header (absl/, spdlog/, gtest/, ...)
      endif()
      list(FIND _ok "${_target}" _allowed)
      if(_allowed EQUAL -1)
        file(RELATIVE_PATH _rel "${LOADSTAR_LAYERING_SOURCE_DIR}" "${_file}")
        string(STRIP "${_line}" _line)
        list(JOIN _ok ", " _ok_text)
        list(APPEND _violations "${_rel}: ${_line} (${_folder}/ may include: ${_ok_text})")
      endif()
    endforeach()
  endforeach()
endforeach()

if(_violations)
  list(JOIN _violations "\n  " _text)
  message(FATAL_ERROR "upward #include (docs/TEAM-NOTES.md, Layering):\n  ${_text}")
endif()
