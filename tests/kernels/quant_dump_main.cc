// quant_dump: writes loadstar's quantization bytes of one input tensor, from the GPU
// kernels (GpuQuantizer) and from the CPU path (quant::Quantize4bit / QuantizeInt8), so
// tests/kernels/bnb_compare.py can byte-compare both with bitsandbytes' CUDA kernels.
// Not a test by itself: scripts/gpu-check step (b) runs it through bnb_compare.py.
//
// Usage: quant_dump --in FILE --dtype F16|BF16|F32 --shape ROWS,COLS --out DIR
//                   [--int8] [--blocksizes 64,128,...]
// For every 4-bit case (nf4|fp4 x blocksize x double quant 0|1) and backend (cpu|gpu) it
// writes DIR/<backend>_<type>_<blocksize>_<dq>.bin: packed bytes, then the fp32 absmax, or
// with double quant the uint8 absmax codes, the fp32 nested absmax and the fp32 offset
// (the order of bitsandbytes' QuantState fields). With --int8 (F16 input):
// DIR/<backend>_int8.bin: int8 weight rows, then the fp32 SCB.
// Without a GPU it writes the cpu files, prints "gpu: skipped: no GPU (...)" and exits 0.
// Exit 1 on bad arguments or a failed quantization.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kernels/cuda_device.h"
#include "kernels/gpu_quantizer.h"
#include "quant/blockwise.h"
#include "quant/int8.h"

namespace loadstar {
namespace {

struct Args {
  std::string in, out;
  DType dtype = DType::kF16;
  std::vector<int64_t> shape;
  std::vector<int> blocksizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};
  bool int8 = false;
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "quant_dump: %s\n", what.c_str());
  std::exit(1);
}

std::vector<int64_t> ParseList(const char* s) {
  std::vector<int64_t> v;
  for (const char* p = s; *p != '\0';) {
    char* end = nullptr;
    v.push_back(std::strtoll(p, &end, 10));
    if (end == p) Fail(std::string("bad number list: ") + s);
    p = *end == ',' ? end + 1 : end;
  }
  return v;
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--int8") {
      a.int8 = true;
      continue;
    }
    if (i + 1 >= argc) Fail("missing value for " + flag);
    const char* value = argv[++i];
    if (flag == "--in") {
      a.in = value;
    } else if (flag == "--out") {
      a.out = value;
    } else if (flag == "--dtype") {
      auto d = ParseDType(value);
      if (!d) Fail(std::string("unknown dtype ") + value);
      a.dtype = *d;
    } else if (flag == "--shape") {
      a.shape = ParseList(value);
    } else if (flag == "--blocksizes") {
      a.blocksizes.clear();
      for (int64_t b : ParseList(value)) a.blocksizes.push_back(static_cast<int>(b));
    } else {
      Fail("unknown flag " + flag);
    }
  }
  if (a.in.empty() || a.out.empty() || a.shape.empty()) {
    Fail("usage: quant_dump --in FILE --dtype F16|BF16|F32 --shape R,C --out DIR [--int8]");
  }
  return a;
}

void Append(std::string* blob, const void* data, size_t bytes) {
  blob->append(static_cast<const char*>(data), bytes);
}

// The QuantState byte layout described at the top.
std::string Serialize(const quant::Quantized4bit& q) {
  std::string blob;
  Append(&blob, q.packed.data(), q.packed.size());
  if (q.spec.double_quant) {
    Append(&blob, q.nested.codes.data(), q.nested.codes.size());
    Append(&blob, q.nested.nested_absmax.data(), q.nested.nested_absmax.size() * sizeof(float));
    Append(&blob, &q.nested.offset, sizeof(float));
  } else {
    Append(&blob, q.absmax.data(), q.absmax.size() * sizeof(float));
  }
  return blob;
}

void Write(const std::string& path, const std::string& blob) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(blob.data(), static_cast<std::streamsize>(blob.size()));
  if (!f) Fail("cannot write " + path);
}

int Main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  std::ifstream f(a.in, std::ios::binary);
  const std::vector<char> data((std::istreambuf_iterator<char>(f)),
                               std::istreambuf_iterator<char>());
  int64_t n = 1;
  for (int64_t d : a.shape) n *= d;
  if (static_cast<int64_t>(data.size()) != n * static_cast<int64_t>(DTypeSize(a.dtype))) {
    Fail(a.in + ": " + std::to_string(data.size()) + " bytes, expected " +
         std::to_string(n * DTypeSize(a.dtype)));
  }
  std::unique_ptr<kernels::GpuQuantizer> gpu;
  if (auto count = kernels::UsableGpuCount(); !count.ok()) {
    std::printf("gpu: skipped: no GPU (%s)\n", std::string(count.status().message()).c_str());
  } else {
    auto made = kernels::GpuQuantizer::Create(0);
    if (!made.ok()) Fail("GpuQuantizer: " + std::string(made.status().message()));
    gpu = std::move(made).value();
  }
  int files = 0;
  if (a.int8) {
    auto cpu = quant::QuantizeInt8(a.dtype, data.data(), a.shape);
    if (!cpu.ok()) Fail("cpu int8: " + std::string(cpu.status().message()));
    auto blob = [](const quant::QuantizedInt8& q) {
      std::string b;
      Append(&b, q.weight.data(), q.weight.size());
      Append(&b, q.scb.data(), q.scb.size() * sizeof(float));
      return b;
    };
    Write(a.out + "/cpu_int8.bin", blob(*cpu));
    ++files;
    if (gpu) {
      auto got = gpu->QuantizeInt8(a.dtype, data.data(), a.shape);
      if (!got.ok()) Fail("gpu int8: " + std::string(got.status().message()));
      Write(a.out + "/gpu_int8.bin", blob(*got));
      ++files;
    }
  }
  for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4}) {
    for (int bs : a.blocksizes) {
      for (bool dq : {false, true}) {
        const quant::Fp4Spec spec{type, bs, dq};
        const std::string name = std::string(quant::QuantTypeName(type)) + "_" +
                                 std::to_string(bs) + "_" + (dq ? "1" : "0") + ".bin";
        auto cpu = quant::Quantize4bit(spec, a.dtype, data.data(), a.shape);
        if (!cpu.ok()) Fail("cpu " + name + ": " + std::string(cpu.status().message()));
        Write(a.out + "/cpu_" + name, Serialize(*cpu));
        ++files;
        if (!gpu) continue;
        auto got = gpu->Quantize4bit(spec, a.dtype, data.data(), a.shape);
        if (!got.ok()) Fail("gpu " + name + ": " + std::string(got.status().message()));
        Write(a.out + "/gpu_" + name, Serialize(*got));
        ++files;
      }
    }
  }
  std::printf("quant_dump: %s %s: %d files in %s\n", a.in.c_str(),
              std::string(DTypeName(a.dtype)).c_str(), files, a.out.c_str());
  return 0;
}

}  // namespace
}  // namespace loadstar

int main(int argc, char** argv) { return loadstar::Main(argc, argv); }
