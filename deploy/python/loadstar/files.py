"""The model's kept non-weight files (config.json, tokenizer files, generation_config.json,
sentence-transformers' modules.json and 1_Pooling/config.json, ...), as a local directory.

transformers' AutoConfig / AutoTokenizer / GenerationConfig read directories, so the
files the store kept with the model (SPEC §4) are downloaded from the worker
(ReadModelFile) into a cache directory, once per instance: $LOADSTAR_CACHE_DIR, else
$XDG_CACHE_HOME/loadstar, else ~/.cache/loadstar, under files/<model>/<instance id>. The
directory appears complete or not at all (written under a temporary name, then renamed),
so concurrent consumers of one instance share it safely.
"""
import os
import shutil
import tempfile

from . import errors


def cache_root():
    root = os.environ.get("LOADSTAR_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "loadstar")
    return root


def _safe_relative(name, where):
    """Refuses file names that would land outside the directory."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise errors.Error(f"{where}: refusing kept file name {name!r} (not a plain relative path)")
    return os.path.join(*parts)


def download(client, worker_address, handle):
    """The local directory holding every file of handle.files (downloaded if needed)."""
    where = f"model {handle.model} on worker {worker_address}"
    dest = os.path.join(cache_root(), "files", handle.model, handle.instance_id)
    if os.path.isdir(dest):
        return dest
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        for f in handle.files:
            path = os.path.join(tmp, _safe_relative(f.name, where))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            received = 0
            with open(path, "wb") as out:
                for chunk in client.read_model_file(worker_address, handle.model, f.name):
                    out.seek(chunk.offset)
                    out.write(chunk.data)
                    received += len(chunk.data)
            if received != f.size or os.path.getsize(path) != f.size:
                raise errors.Error(f"{where}: ReadModelFile({f.name}) gave {received} bytes, "
                                   f"the handle says {f.size}")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):  # not a concurrent download that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
