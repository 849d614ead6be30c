"""gRPC stubs of loadstar.v1, generated from proto/loadstar/v1/*.proto by setup.py
(grpcio-tools) when the package is built; never written by hand or committed."""
