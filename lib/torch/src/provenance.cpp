#include "provenance.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <fmt/format.h>
#include <unistd.h>
#ifdef REPROCHECK_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

#include <cstring>
#include <ctime>
#include <fstream>

#include "reprocheck/build_info.h"
#include "reprocheck/host.h"
#include "reprocheck/protocol.h"
#include "torch_model.h"

namespace reprocheck::detail {

namespace {

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

// The BLAS LibTorch was built with and the CPU kernels it dispatches to, from its build
// configuration: "mkl, AVX512 kernels" ("unknown" when it says neither).
std::string blas_info() {
  const std::string config = at::show_config();
  auto value = [&](const char* key, const char* ends) {
    auto at = config.find(key);
    if (at == std::string::npos) return std::string();
    at += std::strlen(key);
    auto end = config.find_first_of(ends, at);
    return config.substr(at, end == std::string::npos ? std::string::npos : end - at);
  };
  std::string blas = value("BLAS_INFO=", ",\n"), isa = value("CPU capability usage: ", "\n");
  if (blas.empty()) blas = "unknown";
  return isa.empty() ? blas : fmt::format("{}, {} kernels", blas, isa);
}

}  // namespace

void write_provenance(DumpWriter& w, const RunFacts& facts, const torch::jit::Module& module) {
  const RunOptions& o = facts.options;
  auto b = build_info();
  const HostFacts host = host_facts();
  w.set_attribute(attr::kRunOptions, to_json(o));
  w.set_attribute(attr::kReprocheckVersion, b.reprocheck);
  w.set_attribute(attr::kLibtorchVersion, b.libtorch);
  w.set_attribute(attr::kCudaVersion, b.cuda);
  w.set_attribute(attr::kCudnnVersion, b.cudnn);
  w.set_attribute(attr::kHdf5Version, b.hdf5);
  w.set_attribute(attr::kDevice, o.device);
  if (facts.device.is_cuda()) {
    auto [name, driver] = gpu_name_and_driver(facts.device);
    w.set_attribute(attr::kDeviceName, name);
    w.set_attribute(attr::kCudaDriverVersion, driver);
  } else {
    w.set_attribute(attr::kDeviceName, host.cpu);
  }
  w.set_attribute(attr::kCpu, host.cpu);
  w.set_attribute(attr::kBlas, blas_info());
  w.set_attribute(attr::kTorchThreads, static_cast<int64_t>(at::get_num_threads()));
  auto& ctx = at::globalContext();
  w.set_attribute(attr::kTf32Cublas, static_cast<int64_t>(ctx.allowTF32CuBLAS()));
  w.set_attribute(attr::kTf32Cudnn, static_cast<int64_t>(ctx.allowTF32CuDNN()));
  w.set_attribute(attr::kFloat32MatmulPrecision, matmul_precision());
  w.set_attribute(attr::kHost, host.host);
  w.set_attribute(attr::kTime, host.time);
  w.set_attribute(attr::kSeed, facts.seed);
  w.set_attribute(attr::kSeedMode, o.seed == "random" ? "random" : "fixed");
  w.set_attribute(attr::kDataSeed, facts.data_seed);
  w.set_attribute(attr::kDataSeedMode, o.data_seed == "random" ? "random" : "fixed");
  w.set_attribute(attr::kDeterministic, o.deterministic);
  w.set_attribute(attr::kBenchmark, static_cast<int64_t>(o.benchmark));
  w.set_attribute(attr::kThreads, static_cast<int64_t>(at::get_num_threads()));
  w.set_attribute(attr::kMode, o.mode);
  w.set_attribute(attr::kSteps, static_cast<int64_t>(o.steps));
  w.set_attribute(attr::kModel, o.model);
  w.set_attribute(attr::kModelSignature, model_signature(module));
  w.set_attribute(attr::kModelHash, o.model_hash.empty() ? fmt::format("{:016x}", hash_file(o.model)) : o.model_hash);
  w.set_attribute(attr::kLayers, o.layers);
}

}  // namespace reprocheck::detail
