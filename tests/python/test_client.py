"""Client-side argument handling that needs no cluster: deployment configs from keyword
arguments and BitsAndBytesConfig, credentials, error mapping."""
import json

import grpc
import pytest
import torch
from transformers import BitsAndBytesConfig

import loadstar
from loadstar import config, errors


def test_flat_fields_land_in_their_sections():
    c = config.deployment_config("opt", {"torch_dtype": torch.bfloat16, "min_instances": 0,
                                         "keep_alive": 5, "num_gpus": 1, "device_map": "auto"})
    assert c == {"model": "opt", "num_gpus": 1,
                 "backend_config": {"torch_dtype": "bfloat16", "device_map": "auto"},
                 "auto_scaling_config": {"min_instances": 0, "keep_alive": 5}}
    assert json.loads(config.to_yaml(c)) == c
    assert config.deployment_config("opt", {"name": "opt-nf4", "quantization": "nf4"}) == \
        {"model": "opt", "name": "opt-nf4", "quantization": "nf4"}


def test_bitsandbytes_config_becomes_the_yaml_mapping():
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    d = config.quantization_config_dict(qc)
    assert d["load_in_4bit"] is True and d["load_in_8bit"] is False
    assert d["bnb_4bit_quant_type"] == "nf4" and d["bnb_4bit_use_double_quant"] is True
    assert d["bnb_4bit_compute_dtype"] == "bfloat16"
    assert d["quant_method"] == "bitsandbytes"
    assert not any(k.startswith("_") for k in d)
    json.dumps(d)  # plain data


def test_conflicting_or_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="backend_config.torch_dtype given twice"):
        config.deployment_config("m", {"backend_config": {"torch_dtype": "float16"},
                                       "torch_dtype": "float32"})
    with pytest.raises(TypeError, match="unknown deployment field 'min_instance'"):
        config.deployment_config("m", {"min_instance": 1})
    with pytest.raises(TypeError, match="BitsAndBytesConfig or a dict"):
        config.quantization_config_dict("nf4")
    with pytest.raises(ValueError, match="config_yaml alone"):
        loadstar.Client("127.0.0.1:1").deploy("m", config_yaml="model: m\n")


def test_credentials_are_checked_up_front(tmp_path):
    with pytest.raises(ValueError, match="token or token_file"):
        loadstar.Client("127.0.0.1:1", token="a", token_file="b")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(loadstar.Error, match="is empty"):
        loadstar.Client("127.0.0.1:1", token_file=str(empty))
    with pytest.raises(loadstar.Error, match="cannot read the TLS CA certificate"):
        loadstar.Client("127.0.0.1:1", tls={"ca": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="cert and key go together"):
        loadstar.Client("127.0.0.1:1", tls={"cert": "c.pem"})
    with pytest.raises(ValueError, match="unknown tls keys"):
        loadstar.Client("127.0.0.1:1", tls={"ca": "a", "certificate": "c"})


def test_addr_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOADSTAR_ADDR", "127.0.0.1:7999")
    assert loadstar.Client().addr == "127.0.0.1:7999"


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("code,cls", [
    (grpc.StatusCode.NOT_FOUND, loadstar.NotFound),
    (grpc.StatusCode.UNAUTHENTICATED, loadstar.Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, loadstar.ResourceExhausted),
    (grpc.StatusCode.DATA_LOSS, loadstar.DataLoss),
    (grpc.StatusCode.FAILED_PRECONDITION, loadstar.FailedPrecondition),
])
def test_grpc_codes_become_error_classes(code, cls):
    e = errors.from_rpc(_FakeRpcError(code, "the cause"), "Acquire('m')", "controller h:1")
    assert type(e) is cls and e.code == code.name
    assert str(e) == f"Acquire('m') at controller h:1 failed: the cause ({code.name})"
