#include "reprocheck/tensor_meta.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <xxhash.h>
#if REPROCHECK_XXH3_DISPATCH
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <numeric>
#include <thread>

#include "reprocheck/protocol.h"

namespace reprocheck {

namespace {

constexpr const char* kPhaseNames[] = {"init",     "input",      "forward",    "output", "loss",
                                       "backward", "param_grad", "after_step", "rng"};
constexpr const char* kKindNames[] = {"activation", "grad",      "param",      "buffer",     "input",
                                      "target",     "output",    "loss",       "param_grad", "indices",
                                      "batch",      "rng_state", "optim_state"};

template <typename E, size_t N>
std::optional<E> parse_name(std::string_view s, const char* const (&names)[N]) {
  for (size_t i = 0; i < N; ++i)
    if (s == names[i]) return static_cast<E>(i);
  return std::nullopt;
}

}  // namespace

const char* to_string(Phase p) { return kPhaseNames[static_cast<size_t>(p)]; }
const char* to_string(Kind k) { return kKindNames[static_cast<size_t>(k)]; }
std::optional<Phase> parse_phase(std::string_view s) { return parse_name<Phase>(s, kPhaseNames); }
std::optional<Kind> parse_kind(std::string_view s) { return parse_name<Kind>(s, kKindNames); }

int phase_rank(Phase p) {
  switch (p) {
    case Phase::init:
      return 0;
    case Phase::rng:
      return 1;
    case Phase::input:
      return 2;
    case Phase::forward:
      return 3;
    case Phase::output:
      return 4;
    case Phase::loss:
      return 5;
    case Phase::backward:
      return 6;
    case Phase::param_grad:
      return 7;
    case Phase::after_step:
      return 8;
  }
  return 9;
}

std::string rank_layer(int32_t rank, const std::string& layer) {
  const std::string prefix = "rank" + std::to_string(rank);
  return layer.empty() ? prefix : prefix + "/" + layer;
}

std::string layer_in_rank(int32_t rank, const std::string& layer) {
  const std::string prefix = "rank" + std::to_string(rank);
  if (layer == prefix) return "";
  if (layer.rfind(prefix + "/", 0) == 0) return layer.substr(prefix.size() + 1);
  return layer;
}

int32_t rank_of_layer(const std::string& layer) {
  if (layer.rfind("rank", 0) != 0) return -1;
  size_t end = layer.find('/');
  if (end == std::string::npos) end = layer.size();
  if (end <= 4 || end > 4 + 6) return -1;
  int32_t r = 0;
  for (size_t i = 4; i < end; ++i) {
    if (layer[i] < '0' || layer[i] > '9') return -1;
    r = r * 10 + (layer[i] - '0');
  }
  return r;
}

std::string TensorMeta::tensor_name() const {
  std::string base = layer.empty() ? "<model>" : layer;
  if (is_state()) return layer.empty() ? name : layer + "." + name;
  if (is_loop_tensor()) {
    // "input", "batch[1]", "rng numpy"; with the rank of a distributed run first: "rank1/loss".
    std::string own = kind == Kind::rng_state ? fmt::format("{} RNG", name) : name.empty() ? to_string(kind) : name;
    return layer.empty() ? own : layer + "/" + own;
  }
  if (!name.empty() && name != "out") return fmt::format("{}[{}]", base, name.substr(name.find('.') + 1));
  return base;
}

std::string TensorMeta::key() const {
  return fmt::format("{}|{}|{}|{}|{}|{}", step, to_string(phase), layer, to_string(kind), name, call);
}

std::vector<int64_t> unravel(int64_t flat, const std::vector<int64_t>& shape) {
  if (flat < 0) return {};
  std::vector<int64_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    int64_t d = shape[i] > 0 ? shape[i] : 1;
    idx[i] = flat % d;
    flat /= d;
  }
  return idx;
}

std::string unravel_index(int64_t flat, const std::vector<int64_t>& shape) {
  if (flat < 0) return "-";
  return fmt::format("[{}]", fmt::join(unravel(flat, shape), ", "));
}

std::string short_type_name(const std::string& type) {
  auto dot = type.rfind('.');
  return dot == std::string::npos ? type : type.substr(dot + 1);
}

std::string sanitize_text(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  const auto* s = reinterpret_cast<const unsigned char*>(raw.data());
  const size_t n = raw.size();
  auto escape = [&](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f) {
      escape(c);
      ++i;
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A UTF-8 sequence: its length from the lead byte, continuation bytes 10xxxxxx, no overlong
    // forms, no surrogates, nothing above U+10FFFF.
    size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) ok = (s[i + k] & 0xc0) == 0x80;
    if (ok && len == 3) ok = !(c == 0xe0 && s[i + 1] < 0xa0) && !(c == 0xed && s[i + 1] >= 0xa0);
    if (ok && len == 4) ok = !(c == 0xf0 && s[i + 1] < 0x90) && !(c == 0xf4 && s[i + 1] >= 0x90);
    if (!ok) {
      escape(c);
      ++i;
      continue;
    }
    out.append(raw, i, len);
    i += len;
  }
  return out;
}

uint64_t hash_bytes(const void* data, size_t nbytes) {
#if REPROCHECK_XXH3_DISPATCH
  return XXH3_64bits_dispatch(data, nbytes);
#else
  return XXH3_64bits(data, nbytes);
#endif
}

std::vector<uint64_t> hash_spans(const std::vector<std::pair<const void*, size_t>>& spans, size_t max_workers,
                                 const RunOnThreads& run) {
  std::vector<uint64_t> out(spans.size());
  std::vector<size_t> order(spans.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a].second > spans[b].second; });
  size_t total = 0;
  for (const auto& s : spans) total += s.second;
  constexpr size_t kParallelBytes = size_t{1} << 20;  // below this a thread costs more than it saves
  const size_t workers = total < kParallelBytes ? 1 : std::min(std::max<size_t>(max_workers, 1), spans.size());
  std::atomic<size_t> next{0};
  const std::function<void()> work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < order.size();)
      out[order[i]] = hash_bytes(spans[order[i]].first, spans[order[i]].second);
  };
  if (workers <= 1) {
    work();
  } else if (run) {
    run(workers, work);
  } else {
    std::vector<std::thread> pool;
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  return out;
}

uint64_t hash_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return 0;
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::vector<char> block(1 << 20);
  for (size_t n; (n = std::fread(block.data(), 1, block.size(), f)) > 0;) {
#if REPROCHECK_XXH3_DISPATCH
    XXH3_64bits_update_dispatch(state, block.data(), n);
#else
    XXH3_64bits_update(state, block.data(), n);
#endif
  }
  std::fclose(f);
  const uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return h;
}

uint64_t hash_words(const void* data, size_t nbytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t sum = 0;
  const size_t words = (nbytes + 3) / 4;
  for (size_t i = 0; i < words; ++i) {
    uint32_t w = 0;
    for (size_t b = 0; b < 4 && 4 * i + b < nbytes; ++b) w |= static_cast<uint32_t>(p[4 * i + b]) << (8 * b);
    sum += static_cast<uint64_t>(w) * (static_cast<uint64_t>(i) * kHashWordsStride + 1);
  }
  return sum + nbytes;
}

uint64_t hash_for_row(const TensorMeta& row, const void* data, size_t nbytes) {
  return row.dataset == kHashOnlyWords ? hash_words(data, nbytes) : hash_bytes(data, nbytes);
}

uint64_t combine_hash(uint64_t seed, uint64_t hash) { return XXH3_64bits_withSeed(&hash, sizeof hash, seed); }

}  // namespace reprocheck
