"""transformers models whose parameters are the memory of a loadstar instance.

`load_model` mirrors sllm_store.transformers.load_model: give it a deployment name (it is
deployed with the given arguments when it does not exist, then acquired) or a Lease, and
get a transformers model ready to generate, built without reading a checkpoint:

  * the architecture comes from the config.json the store kept (Lease.files_dir());
  * the model is instantiated under accelerate's init_empty_weights (parameters on the
    meta device, buffers real), then each parameter is bound to its mapped tensor
    (load_state_dict(assign=True)): no copy, no initialisation pass;
  * quantized weights become bitsandbytes layers from the loaded bytes (loadstar.quantized);
  * tied weights (OPT's lm_head) are tied again; a parameter still on meta is an error.

The lease lives on the model (`model.loadstar_lease`); dropping the model releases it.
"""
import os
import re
import warnings

from . import config as _config
from . import errors, quantized
from .client import Client
from .lease import Lease

# Auto-scaling fields an existing deployment reports, hence can be checked against.
_SCALING_FIELDS = {"min_instances": "min_instances", "max_instances": "max_instances",
                   "target": "target", "keep_alive": "keep_alive_seconds"}


def _requested_quantization(qc):
    """(method, blocksize, double_quant, compute_dtype, threshold) a quantization_config
    asks for, with HF BitsAndBytesConfig's defaults; None when it asks for none."""
    d = _config.quantization_config_dict(qc)
    if not d:
        return None
    if d.get("load_in_8bit"):
        return ("int8", None, None, None, float(d.get("llm_int8_threshold", 6.0)))
    if d.get("load_in_4bit"):
        return (d.get("bnb_4bit_quant_type", "fp4"), int(d.get("bnb_4bit_blocksize", 64)),
                bool(d.get("bnb_4bit_use_double_quant", False)),
                d.get("bnb_4bit_compute_dtype") or "float32", None)
    return None


def _served_quantization(q):
    if q.method in ("", "none"):
        return None
    if q.method == "int8":
        return ("int8", None, None, None, float(q.llm_int8_threshold))
    return (q.method, int(q.blocksize), bool(q.double_quant), q.compute_dtype or "float32", None)


def _check_matches(name, handle, torch_dtype, quantization_config, device_map):
    """ValueError unless the instance serves what the caller asked for."""
    spec = handle.spec
    want = _config.dtype_name(torch_dtype)
    if want is not None and want != "auto" and want != (spec.torch_dtype or None):
        raise ValueError(
            f"deployment {name} serves torch_dtype {spec.torch_dtype or 'as stored'}, not "
            f"{want}: load it without torch_dtype, or deploy the model under another config")
    if quantization_config is not None:
        asked, served = _requested_quantization(quantization_config), _served_quantization(spec.quantization)
        if asked != served:
            raise ValueError(f"deployment {name} serves quantization {served or 'none'}, not "
                             f"{asked or 'none'} (method, blocksize, double_quant, "
                             f"compute_dtype, int8 threshold)")
    served_map = spec.device_map or "auto"
    if isinstance(device_map, dict):
        if served_map != "custom":
            raise ValueError(f"deployment {name} places layers by {served_map!r}, not by the "
                             f"given device_map")
    elif device_map != served_map:
        raise ValueError(f"deployment {name} has device_map {served_map!r}, not {device_map!r}")


def _check_scaling(name, deployment, fields):
    for key, value in fields.items():
        attr = _SCALING_FIELDS.get(key)
        if attr is None:
            raise ValueError(f"deployment {name} already exists, so {key}= cannot be applied "
                             f"by load_model; use Client.deploy to change it")
        have = getattr(deployment, attr)
        if float(have) != float(value):
            raise ValueError(f"deployment {name} has {key} {have}, not {value}; use "
                             f"Client.deploy to change it")


def _acquire(name, client, torch_dtype, quantization_config, device_map, deploy_fields):
    """Deploys `name` with the arguments if it does not exist; returns a new Lease."""
    try:
        deployment = client.status(name)
    except errors.NotFound:
        deployment = None
    if deployment is None:
        fields = dict(deploy_fields)
        model = fields.pop("model", name)
        if model != name:
            fields["name"] = name
        fields["torch_dtype"] = _config.dtype_name(torch_dtype) if torch_dtype != "auto" else None
        fields["quantization_config"] = quantization_config
        if device_map != "auto":
            fields["device_map"] = device_map
        client.deploy(model=model, **fields)
    else:
        _check_scaling(name, deployment, deploy_fields)
    return client.acquire(name)


def load_model(name_or_lease, *, device_map="auto", torch_dtype=None, quantization_config=None,
               hf_model_class="AutoModelForCausalLM", client=None, **deploy_fields):
    """A transformers model on the tensors of a loadstar instance.

    name_or_lease: a deployment name (deployed with these arguments if it does not exist,
        then acquired) or a Lease (used as is; the deployment arguments must then be unset
        or match it).
    device_map: the deployment's placement ("auto", or {layer prefix: gpu index}); the
        model's tensors are wherever the worker loaded them (host memory -> CPU tensors,
        GPU memory -> cuda tensors).
    torch_dtype: dtype of the non-quantized tensors ("float16", torch.bfloat16, ...).
    quantization_config: a transformers BitsAndBytesConfig or its dict.
    hf_model_class: a transformers class or its name ("AutoModelForCausalLM", "AutoModel").
    client: the Client to use (default Client()).
    deploy_fields: further deployment fields for a new deployment (model= when the store
        model's name is not the deployment's, min_instances, keep_alive, ...; see
        loadstar.config).
    An existing deployment that serves another torch_dtype, quantization or placement is a
    ValueError, not a silent substitute.
    """
    if isinstance(name_or_lease, Lease):
        lease, owned = name_or_lease, False
        if deploy_fields:
            raise TypeError(f"deployment fields {sorted(deploy_fields)} cannot apply to an "
                            f"existing lease")
        name = lease.deployment
    elif isinstance(name_or_lease, str):
        name, owned = name_or_lease, True
        lease = _acquire(name, client or Client(), torch_dtype, quantization_config,
                         device_map, deploy_fields)
    else:
        raise TypeError(f"load_model takes a deployment name or a Lease, not "
                        f"{type(name_or_lease).__name__}")
    try:
        _check_matches(name, lease.handle(), torch_dtype, quantization_config, device_map)
        return _build(lease, hf_model_class)
    except BaseException:
        if owned:
            lease.release()
        raise


def load_tokenizer(name_or_lease, *, client=None, **tokenizer_kwargs):
    """AutoTokenizer.from_pretrained on the tokenizer files the store kept with the model
    (for a GGUF model, its tokenizer metadata).

    A name is acquired for the download (cold-starting an instance if none is ready) and
    released once the files are local."""
    from transformers import AutoTokenizer

    if isinstance(name_or_lease, Lease):
        path = name_or_lease.files_dir()
    else:
        with (client or Client()).acquire(name_or_lease) as lease:
            path = lease.files_dir()
    return AutoTokenizer.from_pretrained(path, **_gguf_tokenizer_kwargs(path), **tokenizer_kwargs)


# Files a Hugging Face tokenizer is built from; a GGUF model has none of them.
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                       "vocab.txt")


def _gguf_tokenizer_kwargs(path):
    """A model stored from a GGUF file keeps its tokenizer metadata as tokenizer.gguf (the
    file's key-value section, no tensors): transformers builds the tokenizer from it as
    from_pretrained(dir, gguf_file=...) does (that needs the gguf package)."""
    if any(os.path.isfile(os.path.join(path, f)) for f in _HF_TOKENIZER_FILES):
        return {}
    if os.path.isfile(os.path.join(path, "tokenizer.gguf")):
        return {"gguf_file": "tokenizer.gguf"}
    return {}


def _model_class(hf_model_class):
    import transformers

    if isinstance(hf_model_class, str):
        cls = getattr(transformers, hf_model_class, None)
        if cls is None:
            raise ValueError(f"transformers has no class {hf_model_class!r}")
        return cls
    return hf_model_class


def _served_dtype(spec, sd, quantized_modules):
    """The dtype of the instance's non-quantized floating tensors (bitsandbytes' quant
    state tensors of the quantized modules have their own)."""
    import torch

    def companion(name):
        return any(name == f"{m}.SCB" or name.startswith(f"{m}.weight.") for m in quantized_modules)

    floats = [t for n, t in sd.items() if t.is_floating_point() and not companion(n)]
    if spec.torch_dtype:
        want = getattr(torch, spec.torch_dtype)
        other = sorted({str(t.dtype) for t in floats if t.dtype != want})
        if other:
            raise errors.Error(f"the instance is loaded with torch_dtype {spec.torch_dtype} but "
                               f"serves {', '.join(other)} tensors (not cast by the worker)")
        return want
    counts = {}
    for t in floats:
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    if not counts:
        raise errors.Error("the instance has no floating-point tensor to take a dtype from")
    return max(counts, key=counts.get)


def _match_prefix(model, sd):
    """Adds or strips the base model prefix ("bert.", "model.") as from_pretrained does
    when a checkpoint of a base model feeds a model with a head, or the reverse."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix:
        return sd
    model_keys = model.state_dict(keep_vars=True).keys()
    expects = any(k.startswith(prefix + ".") for k in model_keys)
    has = any(k.startswith(prefix + ".") for k in sd)
    if expects and not has:
        return {f"{prefix}.{k}": v for k, v in sd.items()}
    if has and not expects:
        return {k[len(prefix) + 1:] if k.startswith(prefix + ".") else k: v for k, v in sd.items()}
    return sd


def _unexpected_to_report(model, keys):
    """Drops the unexpected keys from_pretrained drops silently: the model's
    _keys_to_ignore_on_load_unexpected, and buffers that used to be persistent
    (position_ids, rotary_emb.inv_freq) when the model now has them non-persistent."""
    patterns = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
    buffers = [name for name, _ in model.named_buffers()]
    if any(b.endswith("rotary_emb.inv_freq") for b in buffers):
        patterns.add(r"rotary_emb\.inv_freq")
    if any(b.endswith("position_ids") for b in buffers):
        patterns.add(r"(^|\.)position_ids$")
    if not patterns:
        return list(keys)
    ignore = re.compile("|".join(f"({p})" for p in patterns))
    return [k for k in keys if ignore.search(k) is None]


def _build(lease, hf_model_class):
    import accelerate
    import transformers
    from transformers import AutoConfig, GenerationConfig

    handle = lease.handle()
    spec = handle.spec
    packed = any(t.HasField("quant") and t.quant.prequant for t in handle.tensors)
    if spec.quantization.method == "keep" or packed:
        raise errors.Error(f"deployment {lease.deployment} serves quantization keep: its "
                           f"tensors are the checkpoint's packed GGUF/GPTQ/AWQ blocks (for an "
                           f"engine's kernels; GPTQ/AWQ default to keep); load_model needs "
                           f"quantization none or nf4|fp4|int8")
    if spec.device_map == "tensor_parallel":
        raise errors.Error(f"deployment {lease.deployment} is tensor_parallel: its instance holds "
                           f"shards, and load_model needs whole tensors")
    files = lease.files_dir()
    if not os.path.isfile(os.path.join(files, "config.json")):
        raise errors.Error(f"model {handle.model} was stored without a config.json; load_model "
                           f"needs it to know the architecture")
    config = AutoConfig.from_pretrained(files)
    modules = quantized.quantized_modules(handle)
    if not modules and getattr(config, "quantization_config", None) is not None:
        # A pre-quantized checkpoint (GPTQ, AWQ, saved bnb) served dequantized: the model is
        # a plain one, and must not claim the checkpoint's quantization.
        del config.quantization_config
    sd = lease.state_dict()
    devices = {t.device for t in sd.values()}
    if len(devices) > 1 and any(d.type == "cuda" for d in devices):
        raise errors.Error(f"instance {handle.instance_id} spans {sorted(map(str, devices))}; "
                           f"load_model binds models on one device only")
    dtype = _served_dtype(spec, sd, modules)
    cls = _model_class(hf_model_class)
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    make = getattr(cls, "_from_config", None) or cls.from_config
    with accelerate.init_empty_weights(include_buffers=False):
        model = make(config, **{dtype_kw: dtype})

    if spec.quantization.method not in ("", "none") and not modules:
        raise errors.Error(f"instance {handle.instance_id} is {spec.quantization.method} but its "
                           f"tensor table marks no quantized weight")
    sd = _match_prefix(model, dict(sd))
    if modules:
        quantized.replace_linear_modules(model, modules, spec.quantization)
        quantized.bind_quantized_weights(model, modules, sd)
    result = model.load_state_dict(sd, strict=False, assign=True)
    unexpected = _unexpected_to_report(model, result.unexpected_keys)
    if unexpected:
        warnings.warn(f"load_model: {len(unexpected)} tensors of {handle.model} have no place in "
                      f"{type(model).__name__}: {', '.join(unexpected[:5])}"
                      f"{' ...' if len(unexpected) > 5 else ''}", stacklevel=3)
    model.tie_weights()
    on_meta = [n for n, p in list(model.named_parameters()) + list(model.named_buffers())
               if p.device.type == "meta"]
    if on_meta:
        raise errors.Error(f"{type(model).__name__} parameters missing from instance "
                           f"{handle.instance_id} of {handle.model}: {', '.join(on_meta[:10])}"
                           f"{' ...' if len(on_meta) > 10 else ''}")
    if modules:
        quantized.prepack_for_cpu(model)
        model.config.quantization_config = quantized.bnb_config(spec.quantization)
        setattr(model, "is_loaded_in_8bit" if spec.quantization.method == "int8"
                else "is_loaded_in_4bit", True)
    if model.can_generate() and os.path.isfile(os.path.join(files, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(files)
    model.eval()
    model.loadstar_lease = lease
    return model
