#include "tests/util/quant_test_util.h"

#include <utility>

#include "gtest/gtest.h"

namespace loadstar::testing {

quant::QuantConfig QuantConfigOf(quant::QuantType type, int blocksize, bool double_quant,
                                 DType torch_dtype) {
  quant::QuantConfig c;
  c.type = type;
  c.blocksize = blocksize;
  c.double_quant = double_quant;
  c.torch_dtype = torch_dtype;
  return c;
}

std::map<std::string, quant::NamedTensor> PreparedTensors(const CheckpointBuilder& b,
                                                          const quant::QuantConfig& config,
                                                          const std::string& model_type) {
  std::map<std::string, quant::NamedTensor> out;
  for (const auto& t : b.tensors()) {
    auto p = quant::PrepareTensor(config, t.name, t.dtype, t.shape, t.bytes.data(), {},
                                  quant::IsConv1DWeight(model_type, t.name, t.shape));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) continue;
    for (auto& n : p->tensors) out[n.name] = std::move(n);
  }
  return out;
}

}  // namespace loadstar::testing
