"""Builds the loadstar Python package, generating its gRPC stubs from loadstar's protos.

The stubs (loadstar/v1/*_pb2.py, *_pb2_grpc.py) are produced by grpcio-tools while the
package is built, never written by hand or committed: the .proto files in proto/ are the
only definition of the wire format. protoc runs with proto/ as its include root, so the
generated controller_pb2 imports `loadstar.v1.worker_pb2`; that is why they live in the
subpackage loadstar/v1 of this package.

The protos are found in-tree (../../proto from this directory) or, in an sdist, in the
copy that `sdist` puts under proto/. The installed package requires the grpcio and
protobuf runtimes at least as new as those of the grpcio-tools that generated the stubs
(generated code refuses older runtimes at import).
"""
import os
import shutil
from importlib import metadata

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ("loadstar/v1/worker.proto", "loadstar/v1/controller.proto")


def proto_root():
    """The directory holding loadstar/v1/*.proto: the sdist copy, else the source tree."""
    for root in (os.path.join(HERE, "proto"), os.path.join(HERE, "..", "..", "proto")):
        if all(os.path.isfile(os.path.join(root, p)) for p in PROTOS):
            return os.path.normpath(root)
    raise RuntimeError(
        f"loadstar protos not found: expected {PROTOS[0]} under {HERE}/proto (sdist) "
        f"or {os.path.normpath(os.path.join(HERE, '..', '..', 'proto'))} (source tree)")


def generate_stubs(out_dir):
    """Runs grpcio-tools' protoc on the protos, writing the package loadstar.v1 into out_dir."""
    from grpc_tools import protoc

    root = proto_root()
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    os.makedirs(os.path.join(out_dir, "loadstar", "v1"), exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{root}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + list(PROTOS)) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(PROTOS)} in {root}")


class BuildPyWithStubs(build_py):
    """build_py that also writes the generated stubs (into the source tree when editable)."""

    def run(self):
        super().run()
        generate_stubs(HERE if getattr(self, "editable_mode", False) else self.build_lib)


class SdistWithProtos(sdist):
    """sdist that carries the protos (proto/loadstar/v1/*.proto) so it builds on its own."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = proto_root()
        for p in PROTOS:
            dst = os.path.join(base_dir, "proto", p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(root, p), dst)


def runtime_requirements():
    """grpcio / protobuf runtimes the generated code accepts (those it was generated with)."""
    tools = metadata.version("grpcio-tools")
    proto = metadata.version("protobuf")
    major = int(proto.split(".")[0])
    return [f"grpcio>={tools}", f"protobuf>={proto},<{major + 1}"]


setup(
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
    install_requires=runtime_requirements(),
)
