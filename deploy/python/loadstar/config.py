"""Deployment configs (SPEC §3.2) from Python arguments.

`Client.deploy` and `loadstar.transformers.load_model` take the YAML's fields as keyword
arguments: the top-level keys themselves (name, num_gpus, quantization, backend_config,
auto_scaling_config, placement_config; name defaults to the model's) and, for convenience, the keys of backend_config
(torch_dtype, device_map, max_memory, quantization_config) and of auto_scaling_config
(metric, target, min_instances, max_instances, keep_alive) given flat. The result is sent
as JSON, which is YAML: the daemon validates it and names the key path of any error, so
nothing is checked twice here beyond what Python alone can get wrong (an unknown keyword,
the same key given twice, a value that is not a plain YAML value).
"""
import json

TOP_LEVEL = ("name", "num_gpus", "quantization", "backend_config", "auto_scaling_config",
             "placement_config")
BACKEND_KEYS = ("torch_dtype", "device_map", "max_memory", "quantization_config")
AUTOSCALING_KEYS = ("metric", "target", "min_instances", "max_instances", "keep_alive")


def dtype_name(dtype):
    """"float16" for torch.float16 or "float16"; None stays None."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    name = str(dtype)
    return name[len("torch."):] if name.startswith("torch.") else name


def quantization_config_dict(config):
    """A YAML quantization_config mapping from a transformers BitsAndBytesConfig or a dict.

    BitsAndBytesConfig.to_dict() carries every HF field (the daemon accepts them all and
    refuses the values it cannot honour, e.g. llm_int8_has_fp16_weight: true); its private
    `_load_in_4bit` / `_load_in_8bit` duplicates are dropped and dtypes become names.
    """
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"quantization_config must be a BitsAndBytesConfig or a dict, "
                        f"not {type(config).__name__}")
    out = {}
    for key, value in config.items():
        if key in ("_load_in_4bit", "_load_in_8bit"):
            continue
        if key == "bnb_4bit_compute_dtype":
            value = dtype_name(value)
        elif key == "quant_method" and not isinstance(value, str):
            value = getattr(value, "value", value)  # transformers' QuantizationMethod enum
        out[key] = value
    return out


def deployment_config(model, fields):
    """The deployment config dict for store model `model` and keyword `fields`."""
    if not model or not isinstance(model, str):
        raise ValueError("deploy needs a model (its store name)")
    config = {"model": model}
    flat_backend, flat_scaling = {}, {}
    for key, value in fields.items():
        if value is None:
            continue
        if key in TOP_LEVEL:
            config[key] = value
        elif key in BACKEND_KEYS:
            flat_backend[key] = value
        elif key in AUTOSCALING_KEYS:
            flat_scaling[key] = value
        else:
            raise TypeError(f"unknown deployment field {key!r}; expected one of "
                            f"{', '.join(TOP_LEVEL + BACKEND_KEYS + AUTOSCALING_KEYS)}")
    for section, flat in (("backend_config", flat_backend), ("auto_scaling_config", flat_scaling)):
        if not flat:
            continue
        merged = dict(config.get(section) or {})
        for key, value in flat.items():
            if key in merged:
                raise ValueError(f"{section}.{key} given twice (in {section} and as {key}=)")
            merged[key] = value
        config[section] = merged
    backend = config.get("backend_config")
    if backend:
        backend = dict(backend)
        if "torch_dtype" in backend:
            backend["torch_dtype"] = dtype_name(backend["torch_dtype"])
        if "quantization_config" in backend:
            backend["quantization_config"] = quantization_config_dict(backend["quantization_config"])
        config["backend_config"] = backend
    return config


def to_yaml(config):
    """The config as YAML text (JSON is YAML 1.2); TypeError names a non-YAML value."""
    try:
        return json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"deployment config is not plain YAML data: {e}") from None
