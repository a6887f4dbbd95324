// Verdict integrity: pairing cannot invent a divergence (a key may repeat), ranks compare by
// logical time, the headline is the earliest pair, and a check that compared nothing is no pass.
#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/report.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

struct Row {
  int step;
  std::string phase, layer, kind, name;
  int call;
  std::vector<float> data;
};

void write_rows(const std::string& path, const std::vector<Row>& rows,
                const std::map<std::string, std::string>& attrs = {}) {
  rc::DumpWriter w(path, true);
  w.set_attribute("model", std::string("train.py"));
  w.set_attribute("model_signature", std::string("sig"));
  w.set_attribute("steps", int64_t{2});
  for (const auto& [k, v] : attrs) {
    // Numbers as the format stores them: integers.
    if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos)
      w.set_attribute(k, static_cast<int64_t>(std::stoll(v)));
    else
      w.set_attribute(k, v);
  }
  for (const auto& r : rows) {
    rc::TensorMeta m;
    m.step = r.step;
    m.phase = *rc::parse_phase(r.phase);
    m.layer = r.layer;
    m.kind = *rc::parse_kind(r.kind);
    m.name = r.name;
    m.call = r.call;
    m.dtype = "float32";
    m.shape = {static_cast<int64_t>(r.data.size())};
    w.write(m, r.data.data(), r.data.size() * 4);
  }
  w.commit();
}

rc::Comparison compare(const std::vector<std::string>& paths) { return rc::compare_dumps(paths); }

// Dumps as an older capture wrote them (two records with one key) cannot be written while the
// invariants are checked: this lifts the check for the guard's life.
class OlderCapture {
 public:
  OlderCapture() : saved_(std::getenv(rc::kInvariantsEnv) ? std::getenv(rc::kInvariantsEnv) : "") {
    unsetenv(rc::kInvariantsEnv);
  }
  ~OlderCapture() {
    if (!saved_.empty()) setenv(rc::kInvariantsEnv, saved_.c_str(), 1);
  }

 private:
  std::string saved_;
};

// Gradient accumulation as an older capture wrote it: one step, two micro-batches whose records
// share their keys (call 0 twice).
std::vector<Row> accumulation(float second_batch) {
  return {{0, "input", "", "indices", "indices", 0, {1, 2}},
          {0, "loss", "", "loss", "loss", 0, {0.5f}},
          {0, "input", "", "indices", "indices", 0, {second_batch, 4}},
          {0, "loss", "", "loss", "loss", 0, {0.7f}},
          {0, "after_step", "fc", "param", "weight", 0, {1, 1}}};
}

}  // namespace

TEST(Integrity, ARepeatedKeyPairsInStreamOrder) {
  testutil::TempDir d;
  {
    OlderCapture older;
    write_rows(d.file("a.h5"), accumulation(3));
    write_rows(d.file("b.h5"), accumulation(3));
  }
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  EXPECT_EQ(c.verdict(), rc::Verdict::reproducible);
  EXPECT_EQ(c.pairs[0].compared, 5);
  EXPECT_EQ(c.pairs[0].identical, 5);
  // The second micro-batch differs: it is the one named, as the second occurrence of its key.
  {
    OlderCapture older;
    write_rows(d.file("b.h5"), accumulation(9));
  }
  c = compare({d.file("a.h5"), d.file("b.h5")});
  ASSERT_TRUE(c.divergent());
  const auto& first = c.pairs[0].diffs[*c.pairs[0].first];
  EXPECT_EQ(first.ref.order, 2);
  EXPECT_EQ(first.other.order, 2);
}

TEST(Integrity, ADumpComparedWithItselfMatches) {
  testutil::TempDir d;
  {
    OlderCapture older;
    write_rows(d.file("a.h5"), accumulation(3));
  }
  auto c = compare({d.file("a.h5"), d.file("a.h5")});
  EXPECT_EQ(c.verdict(), rc::Verdict::reproducible);
  EXPECT_EQ(rc::exit_code(rc::make_report(c)), rc::ExitCode::ok);
}

TEST(Integrity, TheWriterRefusesTwoRecordsWithOneKeyWhenCheckingInvariants) {
  testutil::TempDir d;
  ASSERT_TRUE(rc::invariants_checked()) << "the test suite runs with REPROCHECK_INVARIANTS=1";
  EXPECT_THROW(
      write_rows(d.file("a.h5"), {{0, "loss", "", "loss", "loss", 0, {1}}, {0, "loss", "", "loss", "loss", 0, {2}}}),
      rc::RunError);
}

namespace {

// A merged two-rank dump, rank after rank, as merge_rank_dumps writes it. Rank 1 unseeded: its
// RNG state differs at step 0; rank 0 learns of it only through the all-reduced gradients.
std::vector<Row> ranks(bool rank1_differs) {
  const float r1 = rank1_differs ? 9 : 1;
  return {{-1, "init", "rank0/fc", "param", "weight", 0, {1, 1}},
          {0, "rng", "rank0", "rng_state", "torch", 0, {1}},
          {0, "forward", "rank0/drop", "activation", "out", 0, {1, 0}},
          {0, "param_grad", "rank0/fc", "param_grad", "weight", 0, {r1, r1}},
          {0, "after_step", "rank0/fc", "param", "weight", 0, {r1, 2}},
          {-1, "init", "rank1/fc", "param", "weight", 0, {1, 1}},
          {0, "rng", "rank1", "rng_state", "torch", 0, {r1}},
          {0, "forward", "rank1/drop", "activation", "out", 0, {r1, 0}},
          {0, "param_grad", "rank1/fc", "param_grad", "weight", 0, {r1, r1}},
          {0, "after_step", "rank1/fc", "param", "weight", 0, {r1, 2}}};
}

}  // namespace

TEST(Integrity, RanksCompareByLogicalTimeNotFileOrder) {
  testutil::TempDir d;
  write_rows(d.file("a.h5"), ranks(false), {{"ranks", "2"}});
  write_rows(d.file("b.h5"), ranks(true), {{"ranks", "2"}});
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  ASSERT_TRUE(c.divergent());
  const auto& p = c.pairs[0];
  const auto& first = p.diffs[*p.first];
  // Rank 0's param_grad comes first in the file; rank 1's RNG state comes first in logical time.
  EXPECT_EQ(first.ref.rank, 1);
  EXPECT_EQ(first.ref.kind, rc::Kind::rng_state);
  EXPECT_EQ(first.inputs_identical, true);
  ASSERT_EQ(p.rank_firsts.size(), 2u);
  const auto& rank0 = p.diffs[p.rank_firsts[0].second];
  EXPECT_EQ(p.rank_firsts[0].first, 0);
  EXPECT_EQ(rank0.ref.phase, rc::Phase::param_grad);
  // Rank 0's first divergence follows rank 1's in logical time: inherited, not a source.
  EXPECT_EQ(rank0.inputs_identical, false);
  auto note = rc::rank_alone_note(c);
  EXPECT_NE(note.find("rank 1 alone diverged first (step 0, rng)"), std::string::npos) << note;
  EXPECT_NE(note.find("rank 0 from step 0 (param_grad) on"), std::string::npos) << note;
  auto report = rc::make_report(c);
  ASSERT_FALSE(report.hints.empty());
  EXPECT_NE(report.hints[0].evidence.find("on rank 1"), std::string::npos) << report.hints[0].evidence;
}

TEST(Integrity, TheTableAfterTheFirstDivergenceGoesInLogicalTimeOverRanks) {
  testutil::TempDir d;
  write_rows(d.file("a.h5"), ranks(false), {{"ranks", "2"}});
  write_rows(d.file("b.h5"), ranks(true), {{"ranks", "2"}});
  auto r = rc::make_report(compare({d.file("a.h5"), d.file("b.h5")}));
  // In the file, rank 0's gradient and parameter come before rank 1's dropout output; in logical
  // time, step 0's forward comes first, and each group counts both ranks.
  auto j = nlohmann::json::parse(rc::render_json(r));
  std::vector<std::pair<std::string, int>> groups;
  for (const auto& row : j["pairs"][0]["after_first"]) groups.emplace_back(row["phase"], row["count"]);
  std::vector<std::pair<std::string, int>> expected{{"forward", 1}, {"param_grad", 2}, {"after_step", 2}};
  EXPECT_EQ(groups, expected);
  auto text = rc::render_text(r);
  auto forward = text.find("step 0         forward"), after = text.find("step 0         after_step");
  ASSERT_NE(forward, std::string::npos) << text;
  EXPECT_LT(forward, after) << text;
}

TEST(Integrity, TheHeadlineIsThePairThatDivergesEarliest) {
  testutil::TempDir d;
  // Three runs of two ranks: run 1 diverges on rank 1 at the start of step 0 (its RNG state), run 2
  // on rank 0 only after step 0 (a parameter). In the files, run 2's record comes first (rank 0's
  // records precede rank 1's); in logical time, run 1's does.
  auto rows = ranks(false);
  write_rows(d.file("r0.h5"), rows, {{"ranks", "2"}});
  auto run1 = rows;
  run1[6].data = {5};  // rank1 rng
  write_rows(d.file("r1.h5"), run1, {{"ranks", "2"}});
  auto run2 = rows;
  run2[4].data = {7, 7};  // rank0 after_step
  write_rows(d.file("r2.h5"), run2, {{"ranks", "2"}});
  auto c = compare({d.file("r0.h5"), d.file("r1.h5"), d.file("r2.h5")});
  ASSERT_NE(c.headline(), nullptr);
  EXPECT_EQ(c.headline()->other_run, 1);
  EXPECT_EQ(c.headline()->diffs[*c.headline()->first].ref.kind, rc::Kind::rng_state);
  // Without ranks: run 2 diverging at the loss comes before run 1 diverging at a gradient.
  auto run = [](float at_loss, float at_grad) {
    return std::vector<Row>{{0, "forward", "conv", "activation", "out", 0, {1}},
                            {0, "loss", "", "loss", "loss", 0, {at_loss}},
                            {0, "param_grad", "conv", "param_grad", "weight", 0, {at_grad}}};
  };
  write_rows(d.file("r0.h5"), run(1, 1));
  write_rows(d.file("r1.h5"), run(1, 5));
  write_rows(d.file("r2.h5"), run(7, 5));
  c = compare({d.file("r0.h5"), d.file("r1.h5"), d.file("r2.h5")});
  EXPECT_EQ(c.headline()->other_run, 2);
  EXPECT_EQ(c.headline()->diffs[*c.headline()->first].ref.kind, rc::Kind::loss);
}

TEST(Integrity, NothingComparedIsInconclusiveInEveryFormat) {
  testutil::TempDir d;
  write_rows(d.file("a.h5"), {});
  write_rows(d.file("b.h5"), {});
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  EXPECT_FALSE(c.divergent());
  EXPECT_EQ(c.verdict(), rc::Verdict::inconclusive);
  auto r = rc::make_report(c);
  EXPECT_EQ(rc::exit_code(r), rc::ExitCode::usage);
  EXPECT_NE(rc::render_text(r).find("verdict: INCONCLUSIVE (no tensor was compared"), std::string::npos)
      << rc::render_text(r);
  EXPECT_EQ(rc::render_text(r).find("REPRODUCIBLE"), std::string::npos);
  auto j = nlohmann::json::parse(rc::render_json(r));
  EXPECT_EQ(j["verdict"], "inconclusive");
  EXPECT_NE(j["inconclusive_reason"].get<std::string>().find("no tensor was compared"), std::string::npos);
  EXPECT_NE(rc::render_markdown(r).find("**inconclusive**"), std::string::npos);
  auto junit = rc::render_junit(r);
  EXPECT_NE(junit.find("<error type=\"inconclusive\""), std::string::npos) << junit;
  EXPECT_NE(junit.find("errors=\"1\""), std::string::npos);
  auto html = rc::render_html(r);
  EXPECT_NE(html.find("class=\"verdict inconclusive\""), std::string::npos);
  EXPECT_EQ(html.find("Every tensor matches"), std::string::npos);
}

TEST(Integrity, OnlyDataAndRngRecordsAreInconclusive) {
  testutil::TempDir d;
  std::vector<Row> rows = {{0, "input", "", "indices", "indices", 0, {1, 2}},
                           {0, "rng", "", "rng_state", "torch", 0, {3}}};
  write_rows(d.file("a.h5"), rows);
  write_rows(d.file("b.h5"), rows);
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  EXPECT_EQ(c.verdict(), rc::Verdict::inconclusive);
  EXPECT_NE(c.inconclusive_reason().find("no tensor of the model"), std::string::npos);
  // With a loss, the training itself was compared.
  rows.push_back({0, "loss", "", "loss", "loss", 0, {0.5f}});
  write_rows(d.file("a.h5"), rows);
  write_rows(d.file("b.h5"), rows);
  EXPECT_EQ(compare({d.file("a.h5"), d.file("b.h5")}).verdict(), rc::Verdict::reproducible);
}

TEST(Integrity, DifferentSeedsThatMatchAndANonFiniteLossGetNotes) {
  testutil::TempDir d;
  std::vector<Row> rows = {{0, "forward", "drop", "activation", "out", 0, {1, 0, 2}},
                           {0, "loss", "", "loss", "loss", 0, {std::numeric_limits<float>::quiet_NaN()}}};
  write_rows(d.file("a.h5"), rows, {{"seed", "11"}, {"dropout_elements", "3"}, {"nonfinite_loss", "[0]"}});
  write_rows(d.file("b.h5"), rows, {{"seed", "22"}, {"dropout_elements", "3"}, {"nonfinite_loss", "[0]"}});
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  EXPECT_EQ(c.verdict(), rc::Verdict::reproducible);
  std::string notes;
  for (const auto& n : c.notes) notes += n + "\n";
  EXPECT_NE(notes.find("different seeds (11 vs 22) and still every tensor matched"), std::string::npos) << notes;
  EXPECT_NE(notes.find("drew 3 random element(s) over 2 step(s)"), std::string::npos) << notes;
  EXPECT_NE(notes.find("--runs 5"), std::string::npos);
  EXPECT_NE(notes.find("the loss was NaN or Inf at step(s) 0 of run 0"), std::string::npos) << notes;
  // Equal seeds: no seed note.
  write_rows(d.file("b.h5"), rows, {{"seed", "11"}, {"dropout_elements", "3"}});
  c = compare({d.file("a.h5"), d.file("b.h5")});
  for (const auto& n : c.notes) EXPECT_EQ(n.find("different seeds"), std::string::npos) << n;
}

namespace {

// One rank's dump: fc.weight is sharded (rank 1 holds [2:4] of [4]), head.weight replicated.
const char* const kShards =
    "{\"fc.weight\": {\"placements\": \"Shard(dim=0)\", \"mesh\": [2], \"shape\": [4], \"local\": [2], "
    "\"offset\": [2], \"slice\": \"[2:4]\", \"replicated\": false}}";

void rank_dump(const std::string& path, float shard, float head) {
  write_rows(path,
             {{0, "after_step", "fc", "param", "weight", 0, {shard, shard}},
              {0, "after_step", "head", "param", "weight", 0, {head}}},
             {{"shards", kShards}});
}

}  // namespace

TEST(Integrity, ShardsAreNamedAndNotTakenForReplicas) {
  testutil::TempDir d;
  // Within a run the ranks hold different shards (fine) and different replicas (a note).
  rank_dump(d.file("a0.h5"), 1, 5);
  rank_dump(d.file("a1.h5"), 2, 6);
  rc::merge_rank_dumps({d.file("a0.h5"), d.file("a1.h5")}, d.file("a.h5"));
  rc::DumpReader a(d.file("a.h5"));
  auto shards = nlohmann::json::parse(a.attribute("shards"));
  EXPECT_TRUE(shards.contains("rank0/fc.weight"));
  EXPECT_EQ(shards["rank1/fc.weight"]["slice"], "[2:4]");
  const std::string notes = a.attribute("replica_notes");
  EXPECT_NE(notes.find("rank 1's head.weight differs from rank 0's"), std::string::npos) << notes;
  EXPECT_EQ(notes.find("fc.weight"), std::string::npos) << notes;
  // Another run where rank 1's shard differs: the report says which slice of the full tensor it is.
  rank_dump(d.file("b1.h5"), 3, 6);
  rc::merge_rank_dumps({d.file("a0.h5"), d.file("b1.h5")}, d.file("b.h5"));
  auto c = compare({d.file("a.h5"), d.file("b.h5")});
  ASSERT_TRUE(c.divergent());
  bool named = false;
  for (const auto& n : c.notes)
    named |= n.find(
                 "rank1/fc.weight is rank 1's local shard: the slice [2:4] of the full [4] tensor (Shard(dim=0) "
                 "over a device mesh of [2])") != std::string::npos;
  EXPECT_TRUE(named) << testing::PrintToString(c.notes);
}
