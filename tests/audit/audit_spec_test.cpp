// Audit files: expansion into cells, and every problem named with its line and column.
#include <gtest/gtest.h>

#include <fstream>

#include "reprocheck/audit.h"
#include "reprocheck/error.h"
#include "test_util.h"

namespace audit = reprocheck::audit;

namespace {

class AuditSpec : public ::testing::Test {
 protected:
  testutil::TempDir dir;
  void SetUp() override {
    std::ofstream(dir.file("a.pt")) << "x";
    std::ofstream(dir.file("b.pt")) << "x";
  }
  std::string write(const std::string& text, const std::string& name = "audit.toml") {
    std::ofstream(dir.file(name)) << text;
    return dir.file(name);
  }
  // The message of the InputError that loading `text` throws ("" when it loads).
  std::string error_of(const std::string& text) {
    try {
      audit::load_spec(write(text));
    } catch (const reprocheck::InputError& e) {
      return e.what();
    }
    return "";
  }
};

constexpr const char* kGood = R"(
[audit]
name = "night"
jobs = 3
time_regression = 0.25

[defaults]
steps = 1
runs = 3

[matrix]
threads = [1, 2]
deterministic = ["off", "on"]

[[model]]
name = "a"
path = "a.pt"

[[model]]
name = "b"
path = "b.pt"
args = ["--input-shape", "2,3"]
expect = "divergent"
[[model.override]]
when = { threads = 2, deterministic = "on" }
expect = "info"
tolerance = { atol = 1e-6, rtol = 0 }
[[model.override]]
when = { threads = 1, deterministic = "on" }
skip = true

[[model]]
name = "script"
run = ["python", "train.py", "--epochs", "1"]
[model.matrix]
threads = [1, 4]
)";

TEST_F(AuditSpec, ExpandsModelsTimesTheMatrixWithOverrides) {
  auto spec = audit::load_spec(write(kGood));
  EXPECT_EQ(spec.name, "night");
  EXPECT_EQ(spec.jobs, 3);
  EXPECT_DOUBLE_EQ(spec.thresholds.time_growth, 0.25);
  EXPECT_TRUE(spec.thresholds.timing_blocking);  // the defaults
  EXPECT_EQ(spec.thresholds.timing_window, 5);
  EXPECT_EQ(spec.models, (std::vector<std::string>{"a", "b", "script"}));
  ASSERT_EQ(spec.cells.size(), 4u + 3u + 2u);  // b skips one combination
  const auto& first = spec.cells[0];
  EXPECT_EQ(first.model, "a");
  EXPECT_EQ(first.column, "deterministic=off threads=1");  // axes in name order
  EXPECT_EQ(first.key, "a[deterministic=off,runs=3,steps=1,threads=1]");
  EXPECT_EQ(first.expect, audit::Expect::reproducible);
  EXPECT_EQ(first.args, (std::vector<std::string>{"a.pt", "--deterministic", "off", "--runs", "3", "--steps", "1",
                                                  "--threads", "1"}));
  // Model b: expect divergent, one combination skipped, the last one overridden.
  std::vector<const audit::Cell*> b;
  for (const auto& c : spec.cells)
    if (c.model == "b") b.push_back(&c);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0]->expect, audit::Expect::divergent);
  EXPECT_EQ(b[2]->column, "deterministic=on threads=2");
  EXPECT_EQ(b[2]->expect, audit::Expect::info);
  EXPECT_EQ(b[2]->tolerance, "atol=1e-06 rtol=0");
  EXPECT_NE(b[2]->key.find("tolerance=atol=1e-06 rtol=0"), std::string::npos);
  const auto& args = b[2]->args;
  EXPECT_NE(std::find(args.begin(), args.end(), "--atol"), args.end());
  EXPECT_EQ(args.back(), "2,3");  // extra args last
  // The script: `run`, flags, then `--` and the command; its own matrix.
  const auto& s = spec.cells.back();
  EXPECT_TRUE(s.script);
  EXPECT_EQ(s.column, "threads=4");
  EXPECT_EQ(s.args.front(), "run");
  auto dash = std::find(s.args.begin(), s.args.end(), "--");
  ASSERT_NE(dash, s.args.end());
  EXPECT_EQ(std::vector<std::string>(dash + 1, s.args.end()),
            (std::vector<std::string>{"python", "train.py", "--epochs", "1"}));
  EXPECT_EQ(s.cwd, first.cwd);
}

TEST_F(AuditSpec, TimingCanBeInformationalOverAWindow) {
  auto spec = audit::load_spec(
      write("[audit]\ntiming = \"info\"\ntiming_window = 9\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n"));
  EXPECT_FALSE(spec.thresholds.timing_blocking);
  EXPECT_EQ(spec.thresholds.timing_window, 9);
}

TEST_F(AuditSpec, ProblemsNameTheLineAndColumn) {
  auto at = [&](const std::string& text, const std::string& where, const std::string& what) {
    std::string e = error_of(text);
    EXPECT_NE(e.find("audit.toml:" + where + ":"), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << e;
  };
  at("[defaults]\nsteps = 1\nthread = 2\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "3:1",
     "unknown setting 'thread'");
  at("[defaults]\nsteps = \"two\"\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "2:9", "bad value for setting 'steps'");
  at("[[model]]\nname = \"a\"\npath = \"missing.pt\"\n", "3:8", "model 'missing.pt' not found");
  at("[matrix]\nthreads = [1, 2\n", "2:17", "not valid TOML");
  at("[[model]]\nname = \"a\"\npath = \"a.pt\"\n[[model]]\nname = \"a\"\npath = \"b.pt\"\n", "4:1",
     "two models are named 'a'");
  at("[matrix]\ndtype = [\"float32\", \"float64\"]\n[[model]]\nname = \"s\"\nrun = \"python t.py\"\n", "2:1",
     "does not apply to 's', a training script");
  at("[matrix]\nthreads = [1, 1]\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "2:15", "lists 1 twice");
  at("[[model]]\nname = \"a\"\npath = \"a.pt\"\nexpect = \"maybe\"\n", "4:10", "bad expect");
  at("[[model]]\nname = \"a\"\npath = \"a.pt\"\nrun = \"python t.py\"\n", "1:1", "exactly one of path");
  at("[matrix]\nthreads = [1, 2]\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n[model.settings]\nthreads = 4\n", "7:11",
     "is a matrix axis");
  at("[audit]\nnmae = \"x\"\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "2:1", "unknown key 'nmae'");
  at("[audit]\ntiming = \"off\"\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "2:10", "bad timing");
  at("[audit]\ntiming_window = 0\n[[model]]\nname = \"a\"\npath = \"a.pt\"\n", "2:17", "bad timing_window");
  EXPECT_NE(error_of("[audit]\nname = \"x\"\n").find("no models"), std::string::npos);
}

TEST_F(AuditSpec, MissingOrOddFilesAreOneLine) {
  EXPECT_THROW(audit::load_spec(dir.file("nope.toml")), reprocheck::InputError);
  EXPECT_THROW(audit::load_spec(dir.path()), reprocheck::InputError);
  std::string junk(5 << 20, 'x');
  EXPECT_THROW(audit::load_spec(write(junk)), reprocheck::InputError);
}

TEST(AuditShard, ShardsAreDisjointAndCoverEveryCell) {
  std::vector<audit::Cell> cells(7);
  for (size_t i = 0; i < cells.size(); ++i) cells[i].key = std::to_string(i);
  std::multiset<std::string> seen;
  for (int i = 1; i <= 3; ++i)
    for (const auto& c : audit::shard_cells(cells, i, 3)) seen.insert(c.key);
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 7u);
  EXPECT_EQ(audit::shard_cells(cells, 1, 3).size(), 3u);
  EXPECT_EQ(audit::parse_shard("2/4"), std::make_pair(2, 4));
  for (const char* bad : {"0/4", "5/4", "2", "a/b", "2/4x", "/4", "1/0"})
    EXPECT_THROW(audit::parse_shard(bad), reprocheck::UsageError) << bad;
}

}  // namespace
