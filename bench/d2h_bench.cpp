// Device-to-host copy throughput on CUDA: pageable (.to(kCPU)) against pinned memory with an
// asynchronous copy, the way capture moves tensors off the GPU. Median of 9 copies of 256 MB.
//
//   build/bench/d2h_bench
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

int main() {
  if (!torch::cuda::is_available()) {
    fmt::print("d2h_bench: no CUDA device\n");
    return 0;
  }
  using Clock = std::chrono::steady_clock;
  const int64_t n = int64_t{64} << 20;  // 64 Mi floats = 256 MiB
  auto dev = torch::randn({n}, torch::TensorOptions().device(torch::kCUDA));
  auto pinned = torch::empty({n}, torch::TensorOptions().pinned_memory(true));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto gbps = [&](double s) { return static_cast<double>(n) * 4 / s / 1e9; };
  std::vector<double> pageable, pin;
  for (int i = 0; i < 10; ++i) {
    torch::cuda::synchronize();
    auto t = Clock::now();
    auto host = dev.to(torch::kCPU);
    double s = std::chrono::duration<double>(Clock::now() - t).count();
    if (i) pageable.push_back(s);
    torch::cuda::synchronize();
    t = Clock::now();
    pinned.copy_(dev, /*non_blocking=*/true);
    torch::cuda::synchronize();
    s = std::chrono::duration<double>(Clock::now() - t).count();
    if (i) pin.push_back(s);
  }
  fmt::print("device-to-host, 256 MiB, median of 9\n\n| copy | GB/s |\n|---|---:|\n");
  fmt::print("| pageable (.to(kCPU)) | {:.1f} |\n| pinned, non_blocking | {:.1f} |\n", gbps(median(pageable)),
             gbps(median(pin)));
  return 0;
}
