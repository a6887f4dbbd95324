#include "provenance.h"

#include <ATen/Context.h>
#include <fmt/format.h>
#include <unistd.h>
#ifdef REPROCHECK_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

#include <ctime>
#include <fstream>

#include "reprocheck/build_info.h"
#include "torch_model.h"

namespace reprocheck::detail {

namespace {

std::string iso_time_utc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// GPU name and driver version of a CUDA device ("", "" without CUDA support in this build).
std::pair<std::string, std::string> gpu_name_and_driver(const c10::Device& d) {
#ifdef REPROCHECK_WITH_CUDA
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(d.index());
  int driver = 0;
  cudaDriverGetVersion(&driver);
  return {prop ? prop->name : "cuda", fmt::format("{}.{}", driver / 1000, (driver % 1000) / 10)};
#else
  (void)d;
  return {"cuda", "unknown (reprocheck built without CUDA headers)"};
#endif
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "cpu";
}

uint64_t file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return hash_bytes(data.data(), data.size());
}

const char* matmul_precision() {
  switch (at::globalContext().float32MatmulPrecision()) {
    case at::Float32MatmulPrecision::HIGHEST:
      return "highest";
    case at::Float32MatmulPrecision::HIGH:
      return "high";
    default:
      return "medium";
  }
}

}  // namespace

void write_provenance(DumpWriter& w, const RunFacts& facts, const torch::jit::Module& module) {
  const RunOptions& o = facts.options;
  auto b = build_info();
  w.set_attribute("run_options", to_json(o));
  w.set_attribute("reprocheck_version", b.reprocheck);
  w.set_attribute("libtorch_version", b.libtorch);
  w.set_attribute("cuda_version", b.cuda);
  w.set_attribute("cudnn_version", b.cudnn);
  w.set_attribute("hdf5_version", b.hdf5);
  w.set_attribute("device", o.device);
  if (facts.device.is_cuda()) {
    auto [name, driver] = gpu_name_and_driver(facts.device);
    w.set_attribute("device_name", name);
    w.set_attribute("cuda_driver_version", driver);
  } else {
    w.set_attribute("device_name", cpu_name());
  }
  auto& ctx = at::globalContext();
  w.set_attribute("tf32_cublas", static_cast<int64_t>(ctx.allowTF32CuBLAS()));
  w.set_attribute("tf32_cudnn", static_cast<int64_t>(ctx.allowTF32CuDNN()));
  w.set_attribute("float32_matmul_precision", matmul_precision());
  w.set_attribute("host", host_name());
  w.set_attribute("time", iso_time_utc());
  w.set_attribute("seed", facts.seed);
  w.set_attribute("seed_mode", o.seed == "random" ? "random" : "fixed");
  w.set_attribute("data_seed", facts.data_seed);
  w.set_attribute("data_seed_mode", o.data_seed == "random" ? "random" : "fixed");
  w.set_attribute("deterministic", o.deterministic);
  w.set_attribute("benchmark", static_cast<int64_t>(o.benchmark));
  w.set_attribute("threads", static_cast<int64_t>(o.threads));
  w.set_attribute("mode", o.mode);
  w.set_attribute("steps", static_cast<int64_t>(o.steps));
  w.set_attribute("model", o.model);
  w.set_attribute("model_signature", model_signature(module));
  w.set_attribute("model_hash", fmt::format("{:016x}", file_hash(o.model)));
  w.set_attribute("layers", o.layers);
}

}  // namespace reprocheck::detail
