// The capture's transfers and its writer thread: host views and pinned copies of captured
// tensors, device hashes, and AsyncWriter, which writes them on a background thread so that storage
// writes overlap training. Not a public header (capture.cpp's).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "reprocheck/dump.h"
#include "reprocheck/protocol.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck::detail {

using Clock = std::chrono::steady_clock;

// Contiguous CPU copy (or the tensor itself when it already is one) of a tensor's data.
inline at::Tensor host_view(const at::Tensor& t) {
  at::NoGradGuard no_grad;
  at::Tensor h = t.detach();
  if (!h.device().is_cpu()) h = h.to(at::kCPU);
  return h.contiguous();
}

// Adds the scope's duration to a counter.
struct Timer {
  explicit Timer(double* acc) : acc_(acc), start_(Clock::now()) {}
  ~Timer() { *acc_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  double* acc_;
  Clock::time_point start_;
};

// A layer's input hash between its tap_in and tap_out: a value (host inputs) or per-input hashes
// still on the device.
struct PendingHash {
  uint64_t value = 0;
  at::Tensor device_parts;
};

// An exact 64-bit hash of a tensor's bytes computed with integer ops where the tensor lives: the
// bytes as little-endian 32-bit words w_i, hashed as sum_i w_i * (2 * i * K + 1) mod 2^64 plus the
// byte count. Integer addition is associative, so the value does not depend on how the device
// orders the reduction. A 0-dim int64 tensor on the tensor's device.
inline at::Tensor device_hash(const at::Tensor& t) {
  at::Tensor bytes = t.detach().contiguous().reshape({-1}).view(at::kByte);
  const int64_t n = bytes.numel();
  if (n % 4) bytes = at::cat({bytes, at::zeros({4 - n % 4}, bytes.options())});
  at::Tensor words = bytes.view(at::kInt).to(at::kLong).bitwise_and_(0xffffffffLL);
  at::Tensor odd = at::arange(words.numel(), words.options()).mul_(static_cast<int64_t>(kHashWordsStride)).add_(1);
  return words.mul_(odd).sum().add_(n);
}

// A pinned host tensor that an asynchronous copy of the device tensor `src` fills, on the stream
// that produced `src` (so the copy sees its value at this point).
inline at::Tensor pinned_copy(const at::Tensor& src) {
  at::Tensor h = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
  h.copy_(src, /*non_blocking=*/true);
  return h;
}

// An event recorded on `device`'s current stream after the copies queued so far: the writer
// thread waits for it before reading their host buffers.
inline std::shared_ptr<c10::Event> event_after_copies(const c10::Device& device) {
  const auto* impl = c10::impl::getDeviceGuardImpl(device.type());
  auto ready = std::make_shared<c10::Event>(device.type());
  ready->record(impl->getStream(device));
  return ready;
}

// Host buffers for captured tensors, reused across tensors and steps: a step's tensors have the
// shapes of the step before, so after the first step a capture takes no fresh memory (no page
// faults, no zeroing of new pages by the kernel). Buffers are kept by byte size, as bytes, and
// viewed as the tensor's dtype and shape when taken; at most `limit` bytes wait idle.
class BufferPool {
 public:
  explicit BufferPool(size_t limit) : limit_(limit) {}

  // A contiguous CPU tensor of `sizes` and `type`, its contents unspecified.
  at::Tensor take(at::IntArrayRef sizes, at::ScalarType type) {
    int64_t numel = 1;
    for (auto d : sizes) numel *= d;
    const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(type);
    at::Tensor bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(nbytes);
      if (it != free_.end() && !it->second.empty()) {
        bytes = std::move(it->second.back());
        it->second.pop_back();
        idle_ -= nbytes;
      }
    }
    if (!bytes.defined()) bytes = at::empty({static_cast<int64_t>(nbytes)}, at::TensorOptions().dtype(at::kByte));
    return nbytes == 0 ? at::empty(sizes, at::TensorOptions().dtype(type)) : bytes.view(type).view(sizes);
  }

  // Gives a buffer from take() back once nothing reads it any more.
  void give(const at::Tensor& t) {
    const size_t nbytes = t.nbytes();
    if (nbytes == 0 || !t.is_contiguous() || t.storage_offset() != 0 || t.storage().nbytes() != nbytes) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_ + nbytes > limit_) return;
    free_[nbytes].push_back(t.reshape({-1}).view(at::kByte));
    idle_ += nbytes;
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<at::Tensor>> free_;
  size_t idle_ = 0;
  size_t limit_;
};

// Writes captured tensors on a background thread, so that storage writes overlap the training
// computation. Each job owns a private copy of its tensor's data (the live tensor may be changed
// in place later, e.g. by an in-place ReLU). At most `limit` bytes wait at a time; beyond that
// the producer waits. All HDF5 calls during a run happen on this thread.
class AsyncWriter {
 public:
  // `pool`, when given, takes back the host buffers of the tensors queued with `pooled`, once written.
  AsyncWriter(DumpWriter* writer, size_t limit, BufferPool* pool = nullptr)
      : writer_(writer), limit_(limit), pool_(pool), thread_([this] { loop(); }) {}
  ~AsyncWriter() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // `ready`, when given, is an event recorded after the asynchronous device-to-host copy that
  // fills `data`; the writer thread waits for it before reading the data.
  // `input_hash_parts`, when defined, holds per-input device hashes copied with the data: the
  // writer thread folds them into meta.input_hash once the event has completed.
  // A hash-only row: `hash` holds its value (`device_hash` undefined), or `device_hash` is a
  // pinned 1-element host tensor that `ready` fills with the device's hash_words value.
  void put_hash(TensorMeta meta, uint64_t hash, at::Tensor device_hash, std::shared_ptr<c10::Event> ready,
                at::Tensor input_hash_parts) {
    std::unique_lock<std::mutex> lock(mu_);
    if (error_) std::rethrow_exception(error_);
    // A host hash with nothing queued before it: the row is written now (no HDF5 call, no hand-off).
    if (!device_hash.defined() && !input_hash_parts.defined() && queue_.empty() && !busy_) {
      writer_->write_hash(std::move(meta), hash, false);
      return;
    }
    Job job;
    job.meta = std::move(meta);
    job.ready = std::move(ready);
    job.input_hash_parts = std::move(input_hash_parts);
    job.hash_only = true;
    job.hash = hash;
    job.device_hash = std::move(device_hash);
    queue_.push_back(std::move(job));
    cv_.notify_one();
  }

  void put(TensorMeta meta, at::Tensor data, std::shared_ptr<c10::Event> ready = nullptr,
           at::Tensor input_hash_parts = {}, bool pooled = false, bool keep_data = false) {
    size_t n = data.nbytes();
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queued_bytes_ == 0 || queued_bytes_ + n <= limit_ || error_; });
    if (error_) std::rethrow_exception(error_);
    queued_bytes_ += n;
    Job job;
    job.meta = std::move(meta);
    job.data = std::move(data);
    job.ready = std::move(ready);
    job.input_hash_parts = std::move(input_hash_parts);
    job.pooled = pooled;
    job.keep_data = keep_data;
    queue_.push_back(std::move(job));
    cv_.notify_one();
  }

  // Waits until every queued tensor is written; rethrows a write error.
  // The error the writer thread met, if any (a full disk): what failed, whichever tap noticed.
  std::exception_ptr error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return (queue_.empty() && !busy_) || error_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Job {
    TensorMeta meta;
    at::Tensor data;
    std::shared_ptr<c10::Event> ready;
    at::Tensor input_hash_parts;
    bool hash_only = false;
    bool pooled = false;     // data came from the pool: it goes back there once written
    bool keep_data = false;  // kept in a hash-only dump (pass 2's drill-down ops)
    uint64_t hash = 0;
    at::Tensor device_hash;
  };

  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      size_t n = job.data.defined() ? job.data.nbytes() : 0;
      std::exception_ptr err;
      try {
        if (job.ready) job.ready->synchronize();
        if (job.input_hash_parts.defined()) {
          const int64_t* parts = job.input_hash_parts.data_ptr<int64_t>();
          uint64_t h = 0;
          for (int64_t k = 0; k < job.input_hash_parts.numel(); ++k) {
            uint64_t hx = static_cast<uint64_t>(parts[k]);
            h = combine_hash(h, hx);
          }
          job.meta.input_hash = h;
        }
        if (error_) {
        } else if (job.hash_only) {
          const bool words = job.device_hash.defined();
          const uint64_t h = words ? static_cast<uint64_t>(job.device_hash.data_ptr<int64_t>()[0]) : job.hash;
          writer_->write_hash(std::move(job.meta), h, words);
        } else {
          writer_->write(std::move(job.meta), job.data.data_ptr(), n, nullptr, job.keep_data);
        }
      } catch (...) {
        err = std::current_exception();
      }
      if (job.pooled && pool_) pool_->give(job.data);
      job.data = at::Tensor();
      {
        std::lock_guard<std::mutex> lock(mu_);
        queued_bytes_ -= n;
        busy_ = false;
        if (err && !error_) error_ = err;
      }
      space_.notify_all();
    }
  }

  DumpWriter* writer_;
  size_t limit_;
  BufferPool* pool_;
  std::mutex mu_;
  std::condition_variable cv_, space_;
  std::deque<Job> queue_;
  size_t queued_bytes_ = 0;
  bool busy_ = false, closing_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace reprocheck::detail
