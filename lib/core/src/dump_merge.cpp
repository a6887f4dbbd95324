#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/protocol.h"
#include "reprocheck/run_options.h"

namespace reprocheck {

namespace {

// A rank's `shards` attribute: sharded tensor name -> where its local shard sits.
nlohmann::json shards_of(const DumpReader& r) {
  const std::string text = r.attribute(attr::kShards);
  if (text.empty() || !json_depth_within(text, kMaxJsonDepth)) return nlohmann::json::object();
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

// Whether each rank holds a different part of the tensor (a sharded placement): its ranks do not
// have to agree.
bool sharded(const nlohmann::json& shards, const std::string& name) {
  auto it = shards.find(name);
  return it != shards.end() && it->is_object() && !it->value("replicated", false);
}

// The first parameter of each step whose value after the step differs between rank 0 and `rank`:
// replicas (DDP, a Replicate() placement) must agree after a step; shards need not.
std::vector<std::string> replica_disagreements(const DumpReader& rank0, const DumpReader& other, int rank) {
  const nlohmann::json shards0 = shards_of(rank0), shards = shards_of(other);
  std::map<std::string, const TensorMeta*> theirs;
  for (const auto& m : other.index())
    if (m.phase == Phase::after_step && m.kind == Kind::param) theirs[m.key()] = &m;
  std::vector<std::string> notes;
  int reported_step = -2;
  for (const auto& m : rank0.index()) {
    if (m.phase != Phase::after_step || m.kind != Kind::param || m.step == reported_step) continue;
    if (sharded(shards0, m.tensor_name()) || sharded(shards, m.tensor_name())) continue;
    auto it = theirs.find(m.key());
    if (it == theirs.end() || it->second->hash == m.hash) continue;
    notes.push_back(
        fmt::format("replicas disagree after step {}: rank {}'s {} differs from rank 0's (DDP and "
                    "replicated placements keep replicas identical: look for rank-dependent code or "
                    "unsynchronized buffers)",
                    m.step, rank, m.tensor_name()));
    reported_step = m.step;
  }
  return notes;
}

}  // namespace

void merge_rank_dumps(const std::vector<std::string>& rank_dumps, const std::string& out) {
  if (rank_dumps.empty()) throw InputError(fmt::format("no rank dumps to merge into '{}'", out));
  std::vector<std::unique_ptr<DumpReader>> readers;
  for (const auto& path : rank_dumps) readers.push_back(std::make_unique<DumpReader>(path));
  bool hashes_only = false;
  for (const auto& r : readers) hashes_only |= r->hashes_only();
  DumpWriter writer(out, false, hashes_only);
  for (const auto& [name, value] : readers[0]->attributes()) {
    if (name == "format" || name == "format_version" || name == "tensor_count" || name == "capture" ||
        name == attr::kShards)
      continue;
    if (readers[0]->integer_attribute(name))
      writer.set_attribute(name, static_cast<int64_t>(std::stoll(value)));
    else
      writer.set_attribute(name, value);
  }
  writer.set_attribute(attr::kRanks, static_cast<int64_t>(readers.size()));
  nlohmann::json notes = nlohmann::json::array();
  nlohmann::json shards = nlohmann::json::object();
  std::vector<std::byte> buffer;
  for (size_t rank = 0; rank < readers.size(); ++rank) {
    const DumpReader& reader = *readers[rank];
    if (rank > 0)
      for (auto& note : replica_disagreements(*readers[0], reader, static_cast<int>(rank))) notes.push_back(note);
    const nlohmann::json own = shards_of(reader);
    for (TensorMeta m : reader.index()) {
      auto shard = own.find(m.tensor_name());
      m.layer = rank_layer(static_cast<int32_t>(rank), m.layer);
      if (shard != own.end()) shards[m.tensor_name()] = *shard;
      if (!m.has_data()) {
        const bool words = m.dataset == kHashOnlyWords;
        writer.write_hash(std::move(m), m.hash, words);
        continue;
      }
      buffer = reader.read(m);  // checked against m.hash: no need to hash it again
      const uint64_t h = m.hash;
      writer.write(std::move(m), buffer.data(), buffer.size(), &h, /*keep_data=*/true);  // a rank's kept data
    }
  }
  if (!notes.empty()) writer.set_attribute(attr::kReplicaNotes, notes.dump());
  if (!shards.empty()) writer.set_attribute(attr::kShards, shards.dump());
  writer.commit();
}

}  // namespace reprocheck
