# Every dependency comes from a Debian package (scripts/setup installs them all).
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
if(LOADSTAR_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
find_package(OpenSSL REQUIRED)           # TLS certificate checks, `up --tls-dir`
find_package(prometheus-cpp CONFIG REQUIRED)  # metrics endpoint
