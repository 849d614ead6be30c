# Static archives for the libraries that dominate the `loadstar` binary's start-up (SPEC §8:
# `loadstar --help` and `status` under 20 ms). Linked against the shared libraries, the
# binary maps 68 of them and the dynamic loader spends most of a `status` call resolving
# gRPC's and Protobuf's relocations against that list (perf: do_lookup_x the top symbol;
# status 18-22 ms median here). Linking gRPC, Protobuf and the C libraries under them from
# the Debian packages' .a files instead cut it to 54 libraries (medians of 30: status
# 21.7 -> 13.9 ms, --help 18.4 -> 11.0 ms; docs/performance.md "CLI start-up").
#
# Abseil stays shared on purpose: the CUDA module (kernels/, dlopened) exchanges
# absl::Status and Mutex-guarded objects with the executable, so both must use the one
# libabsl_*.so copy; a static absl in the executable would give the process two. spdlog,
# fmt, prometheus-cpp and civetweb ship no archives; Debian's libxxhash.a lacks the XXH3
# dispatch symbols the shared library has. Every executable (tests included) links the
# same way, so the tests run the linkage the product ships.
#
# The swap rewrites the imported targets' locations after find_package: their interface
# link lists (gRPC's exported ones include its private dependencies: c-ares, re2, upb,
# address_sorting, OpenSSL, zlib) already put each archive before what it needs.
option(LOADSTAR_STATIC_DEPS "Link gRPC, Protobuf, OpenSSL, SQLite, liburing, yaml-cpp from static archives" ON)

function(loadstar_archive_for out name)
  find_library(archive_${name} NAMES lib${name}.a NO_CACHE)
  if(NOT archive_${name})
    message(FATAL_ERROR "LOADSTAR_STATIC_DEPS: lib${name}.a not found (its -dev package "
                        "ships it; or configure with -DLOADSTAR_STATIC_DEPS=OFF)")
  endif()
  set(${out} ${archive_${name}} PARENT_SCOPE)
endfunction()

# Points every IMPORTED_LOCATION* property the target has at the archive.
function(loadstar_link_target_static target name)
  loadstar_archive_for(archive ${name})
  get_target_property(configs ${target} IMPORTED_CONFIGURATIONS)
  set(props IMPORTED_LOCATION)
  if(configs)
    foreach(config IN LISTS configs)
      string(TOUPPER ${config} config)
      list(APPEND props IMPORTED_LOCATION_${config})
    endforeach()
  endif()
  foreach(prop IN LISTS props)
    get_target_property(location ${target} ${prop})
    if(location)
      set_target_properties(${target} PROPERTIES ${prop} ${archive})
    endif()
  endforeach()
  # An archive carries no NEEDED entries: its own dependencies join the link interface.
  if(ARGN)
    set_property(TARGET ${target} APPEND PROPERTY INTERFACE_LINK_LIBRARIES ${ARGN})
  endif()
endfunction()

# INTERFACE targets (pkg-config's, re2's) name their library in INTERFACE_LINK_LIBRARIES.
function(loadstar_link_interface_static target name)
  loadstar_archive_for(archive ${name})
  get_target_property(items ${target} INTERFACE_LINK_LIBRARIES)
  list(FILTER items EXCLUDE REGEX "^(-l${name}|.*/lib${name}\\.so.*)$")
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${items};${archive}")
endfunction()

if(LOADSTAR_STATIC_DEPS)
  foreach(lib grpc++ grpc++_reflection grpc gpr upb address_sorting)
    loadstar_link_target_static(gRPC::${lib} ${lib})
  endforeach()
  loadstar_link_target_static(protobuf::libprotobuf protobuf ZLIB::ZLIB)
  loadstar_link_target_static(ZLIB::ZLIB z)
  loadstar_link_target_static(c-ares::cares cares)
  loadstar_link_interface_static(re2::re2 re2)
  loadstar_link_target_static(OpenSSL::SSL ssl)
  loadstar_link_target_static(OpenSSL::Crypto crypto ${CMAKE_DL_LIBS} Threads::Threads)
  loadstar_link_target_static(SQLite::SQLite3 sqlite3 ${CMAKE_DL_LIBS} m Threads::Threads)
  loadstar_link_interface_static(PkgConfig::URING uring)
  loadstar_link_target_static(yaml-cpp yaml-cpp)
endif()
