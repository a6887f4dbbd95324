// A stand-in for a front end's worker, for the runner's tests. It writes a small dump:
//   input   = [1, 2, 3]
//   layer1  = [a, 1]        a = $FAKE_A (default: the seed)
//   layer2  = [b, 2]        b = $FAKE_B (default 0), inputs hashed from layer1
//   loss    = [a + b]
// for each of the run options' `steps` (step s adds s to layer2), into a hash-only dump when the
// options say hashes_only, and honours --replay/--replay-keys like `reprocheck record`. Behaviours:
// ok, crash, input-error, sleep (for timeouts), chatty (warnings on stderr), flaky (b = the run
// index, except in a capture ladder's second pass), late (b = the run index from step 2 on),
// no-dump (exits 0 without writing its dump), racing (b = the run index from step 1 on, and from
// step 0 in a drill-down; layer2's op "layer2:aten::add#0" is recorded at the drill step), fork (leaves a sleeping
// child behind, its pid in $FAKE_CHILD_PID_FILE). A seed of "random" draws one (1 to 1000) and records it as the seed.
// $FAKE_SIGNATURE replaces the model signature (another model). With a capture plan (pass 2) it keeps
// the plan's records' data and stops after layer2 once it has written them all.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/run_options.h"

namespace rc = reprocheck;

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  const std::string behaviour = flags.count("--behaviour") ? flags["--behaviour"] : "ok";
  const int index = std::atoi(flags["--index"].c_str());
  const int fail_index = flags.count("--fail-index") ? std::atoi(flags["--fail-index"].c_str()) : -1;
  if (fail_index < 0 || fail_index == index) {
    if (behaviour == "crash") {
      std::fprintf(stderr, "fake worker: about to crash\n");
      std::fflush(stderr);
      std::abort();
    }
    if (behaviour == "input-error") {
      // A line that looks like an error but is not the one to relay.
      std::fprintf(stderr, "reprocheck: error: a decoy on stderr\nmore output\n");
      rc::report_error_to_runner("bad input 'x.pt': the fake worker rejects it; pass another");
      return 2;
    }
    if (behaviour == "sleep") std::this_thread::sleep_for(std::chrono::seconds(30));
  }
  if (behaviour == "chatty") std::fprintf(stderr, "warning: same\nwarning: same\nwarning: other\n");
  if (behaviour == "no-dump") return 0;
  if (behaviour == "fork") {
    pid_t child = fork();
    if (child == 0) {
      std::this_thread::sleep_for(std::chrono::seconds(60));
      _exit(0);
    }
    if (const char* f = std::getenv("FAKE_CHILD_PID_FILE")) std::ofstream(f) << child << "\n";
  }
  float a = static_cast<float>(std::atof(flags["--seed"].c_str()));
  if (flags["--seed"] == "random") {
    std::ifstream urandom("/dev/urandom", std::ios::binary);
    unsigned v = 0;
    urandom.read(reinterpret_cast<char*>(&v), sizeof v);
    a = static_cast<float>(1 + v % 1000);
  }
  if (const char* v = std::getenv("FAKE_A")) a = static_cast<float>(std::atof(v));
  float b = 0;
  if (const char* v = std::getenv("FAKE_B")) b = static_cast<float>(std::atof(v));

  std::map<std::string, std::vector<float>> replay;
  if (flags.count("--replay-keys")) {
    rc::DumpReader ref(flags["--replay"]);
    std::set<std::string> keys;
    std::ifstream in(flags["--replay-keys"]);
    for (std::string line; std::getline(in, line);) keys.insert(line);
    for (const auto& m : ref.index())
      if (keys.count(m.key())) {
        std::vector<float> v(static_cast<size_t>(m.numel));
        ref.read_into(m, v.data(), v.size() * sizeof(float));
        replay[m.key()] = v;
      }
  }
  const rc::RunOptions options = rc::from_json(flags["--options"]);
  const bool second_pass = flags["--dump"].find(".pass-") != std::string::npos;
  if (behaviour == "flaky" && !second_pass) b = static_cast<float>(index);
  rc::DumpWriter w(flags["--dump"], false, options.hashes_only);
  // Pass 2: the plan's records keep their data, and the run stops right after the last of them.
  if (options.hashes_only && !options.capture_plan.empty()) w.keep_data_from(options.capture_plan);
  size_t kept = 0;
  w.set_attribute("model", std::string("fake.pt"));
  w.set_attribute("model_signature",
                  std::string(std::getenv("FAKE_SIGNATURE") ? std::getenv("FAKE_SIGNATURE") : "fake"));
  w.set_attribute("steps", int64_t{options.steps});
  w.set_attribute("device", std::string("cpu"));
  w.set_attribute("seed", static_cast<int64_t>(a));
  w.set_attribute("run_options", flags["--options"]);
  uint64_t previous = 0;
  int step = 0;
  auto put = [&](const char* layer, rc::Phase phase, rc::Kind kind, std::vector<float> v, bool hashed_inputs) {
    rc::TensorMeta m;
    m.step = step;
    m.phase = phase;
    m.kind = kind;
    m.layer = layer;
    m.layer_type = std::strchr(layer, ':') ? "aten::add" : *layer ? "fake.Layer" : "";
    m.name = "out";
    m.dtype = "float32";
    m.shape = {static_cast<int64_t>(v.size())};
    auto it = replay.find(m.key());
    if (it != replay.end()) v = it->second;
    m.input_hash = previous;
    m.has_input_hash = hashed_inputs;
    kept += w.plan_size() > 0 && w.keeps_data(m);
    previous = w.write(m, v.data(), v.size() * sizeof(float)).hash;
    return v;
  };
  auto window_written = [&] { return w.plan_size() > 0 && kept >= w.plan_size(); };
  for (step = 0; step < options.steps && !window_written(); ++step) {
    float bs = b + static_cast<float>(step);
    if (behaviour == "late" && step >= 2) bs += static_cast<float>(index);
    if (behaviour == "racing" && (step >= 1 || options.drill_step >= 0)) bs += static_cast<float>(index);
    put("", rc::Phase::input, rc::Kind::input, {1, 2, 3}, false);
    auto l1 = put("layer1", rc::Phase::forward, rc::Kind::activation, {a, 1}, true);
    if (behaviour == "racing" && step == options.drill_step)
      put("layer2:aten::add#0", rc::Phase::forward, rc::Kind::activation, {bs, 2}, false);
    auto l2 = put("layer2", rc::Phase::forward, rc::Kind::activation, {bs, 2}, true);
    if (window_written()) break;
    put("", rc::Phase::loss, rc::Kind::loss, {l1[0] + l2[0]}, false);
  }
  w.commit();
  return 0;
}
