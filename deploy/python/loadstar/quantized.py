"""bitsandbytes layers on an instance's quantized tensors, without re-quantizing.

A quantized deployment serves each quantized Linear's weight as bitsandbytes' HF
serialization names it (SPEC §6): 4-bit `<m>.weight` (packed codes) with
`<m>.weight.absmax`, `.quant_map`, `.nested_absmax`, `.nested_quant_map` and
`.quant_state.bitsandbytes__<nf4|fp4>`; int8 `<m>.weight`, `<m>.SCB` and
`<m>.weight_format`. The modules and parameters are built exactly as transformers builds
them when it loads such a checkpoint (integrations/bitsandbytes.py: replace_with_bnb_linear
with pre_quantized=True, then Params4bit.from_prequantized / Int8Params with SCB), so the
attached model computes bit for bit what `from_pretrained(<store export>)` computes.
"""
from . import errors

FOUR_BIT_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                     ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4")
INT8_COMPANIONS = ("SCB", "weight_format")


def quantized_modules(handle):
    """{module path: quant type} of the modules whose weight the handle holds quantized."""
    out = {}
    for t in handle.tensors:
        if t.HasField("quant") and t.quant.type and t.name.endswith(".weight"):
            out[t.name[:-len(".weight")]] = t.quant.type
    return out


def bnb_config(quantization):
    """transformers.BitsAndBytesConfig equivalent to a LoadSpec.quantization (for
    model.config, so the attached model describes itself as transformers' would)."""
    import transformers

    q = quantization
    if q.method == "int8":
        return transformers.BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=q.llm_int8_threshold,
            llm_int8_skip_modules=list(q.skip_modules) or None)
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.method,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=q.compute_dtype or "float32",
        llm_int8_skip_modules=list(q.skip_modules) or None)
    if q.blocksize and q.blocksize != 64:
        # loadstar's extension, as `store export` writes it into config.json.
        config.bnb_4bit_blocksize = q.blocksize
    return config


def replace_linear_modules(model, modules, quantization):
    """Replaces each nn.Linear named in `modules` by the bitsandbytes layer transformers
    would create for it (on the meta device; weights come later)."""
    import bitsandbytes as bnb
    import torch

    compute_dtype = getattr(torch, quantization.compute_dtype or "float32")
    for name, qtype in modules.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise errors.Error(f"the instance quantizes {name}.weight but the model has no "
                               f"module {name}") from None
        if type(module) is not torch.nn.Linear:
            raise errors.Error(f"the instance quantizes {name}.weight but {name} is a "
                               f"{type(module).__name__}, not an nn.Linear")
        with torch.device("meta"):
            if qtype == "int8":
                new = bnb.nn.Linear8bitLt(module.in_features, module.out_features,
                                          module.bias is not None, has_fp16_weights=False,
                                          threshold=quantization.llm_int8_threshold)
                new.weight.data = new.weight.data.to(dtype=torch.int8)
            elif qtype in ("nf4", "fp4"):
                new = bnb.nn.Linear4bit(module.in_features, module.out_features,
                                        module.bias is not None, compute_dtype,
                                        compress_statistics=quantization.double_quant,
                                        quant_type=qtype, quant_storage=torch.uint8)
                new.weight.data = new.weight.data.to(dtype=torch.uint8)
            else:
                raise errors.Error(f"{name}.weight: unknown quantization {qtype!r}")
        new.source_cls = type(module)
        new.requires_grad_(False)
        model.set_submodule(name, new)


def bind_quantized_weights(model, modules, sd):
    """Sets each replaced module's weight from the served tensors; pops every tensor it
    consumed from `sd` so what is left are the plain parameters and buffers."""
    import bitsandbytes as bnb

    for name, qtype in modules.items():
        module = model.get_submodule(name)
        key = f"{name}.weight"
        if key not in sd:
            raise errors.Error(f"the instance has no tensor {key}")
        data = sd.pop(key)
        if qtype == "int8":
            scb = sd.pop(f"{name}.SCB", None)
            if scb is None:
                raise errors.Error(f"int8 weight {key} has no {name}.SCB in the instance")
            fmt = sd.pop(f"{name}.weight_format", None)
            if fmt is not None and int(fmt.reshape(-1)[0]) != 0:
                raise errors.Error(f"{name}.weight_format is {int(fmt.reshape(-1)[0])}; only "
                                   f"row-major (0) int8 weights can be served")
            kwargs = dict(module.weight.__dict__)
            kwargs["SCB"] = scb
            weight = bnb.nn.Int8Params(data, requires_grad=False, **kwargs).to(data.device)
        else:
            stats = {}
            for suffix in FOUR_BIT_SUFFIXES:
                t = sd.pop(key + suffix, None)
                if t is not None:
                    stats["weight" + suffix] = t
            if "weight.absmax" not in stats or "weight.quant_map" not in stats:
                raise errors.Error(f"4-bit weight {key} lacks its absmax / quant_map tensors")
            weight = bnb.nn.Params4bit.from_prequantized(
                data=data, quantized_stats=stats, requires_grad=False, device=data.device,
                module=module)
        module._is_hf_initialized = True
        setattr(module, "weight", weight)
