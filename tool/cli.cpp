#include "cli.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/isolate.h"
#include "reprocheck/ladder.h"
#include "reprocheck/layers.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The app's flag closest to `word` ("--stpes" -> "--steps"), or "" when none is close.
std::string closest_flag(const CLI::App& app, const std::string& word) {
  std::string flag = word.substr(0, word.find('='));
  std::string best;
  size_t best_distance = 3;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& name : o->get_lnames()) {
      const std::string candidate = "--" + name;
      size_t d = edit_distance(flag, candidate);
      if (d < best_distance) best_distance = d, best = candidate;
    }
  }
  return best;
}

// The one line for arguments the app did not expect: an unknown flag (with the closest one), or
// words that look like a command given to `run` without `--` before it.
std::string unexpected(const CLI::App& app, const std::vector<std::string>& extras) {
  const bool run = app.get_name().rfind("reprocheck run", 0) == 0;
  std::string words;
  for (const auto& w : extras) words += (words.empty() ? "" : " ") + sanitize_text(w);
  // `reprocheck run python train.py --epochs 2`: the command, not flags of reprocheck's.
  if (run && !extras.empty() && extras.front().rfind("-", 0) != 0)
    return fmt::format("put '--' before the command to run: reprocheck run [options] -- {}", words);
  for (const auto& word : extras)
    if (word.rfind("-", 0) == 0) {
      std::string near = closest_flag(app, word);
      return fmt::format("unknown flag '{}'{}", sanitize_text(word),
                         near.empty() ? "" : "; did you mean '" + near + "'?");
    }
  return fmt::format("unexpected argument(s) '{}'", words);
}

}  // namespace

int parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());
  const std::string name = app.get_name().substr(0, app.get_name().find(" ["));
  try {
    app.parse(args);
    return -1;
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return to_int(ExitCode::ok);
  } catch (const CLI::ExtrasError&) {
    fmt::print(stderr, "{}; run '{} --help' for usage\n", error_line(unexpected(app, app.remaining())), name);
    return to_int(ExitCode::usage);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}; run '{} --help' for usage\n", error_line(first_line(e.what())), name);
    return to_int(ExitCode::usage);
  }
}

OptionFlags::OptionFlags(CLI::App& app, OptionCommand command, bool model) {
  const Settings defaults;
  if (model) app.add_option("model", settings_.run.model, "TorchScript model file (.pt)")->required();
  for (const auto& def : option_table()) {
    if (!*def.flag || !def.takes(command)) continue;
    // const: CLI11 binds a non-const string argument as the option's variable.
    const std::string help = option_help(def, command);
    CLI::Option* o;
    if (def.is_flag()) {
      o = app.add_flag(def.flag, help);
    } else if (def.implicit[0]) {
      o = app.add_option(def.flag, help)->expected(0, 1);
    } else if (def.repeats()) {
      // Each use adds one or more values: --env A=1 B=2.
      o = app.add_option(def.flag, help)
              ->expected(CLI::detail::expected_max_vector_size)
              ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    } else {
      o = app.add_option(def.flag, help)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      if (std::string text = option_text(defaults, def); !text.empty() && text != def.unset) o->default_str(text);
    }
    if (!def.is_flag()) o->type_name(option_type_name(def));
    flags_.emplace_back(&def, o);
  }
}

bool OptionFlags::given(const char* key) const {
  for (const auto& [def, o] : flags_)
    if (std::string(def->key) == key) return o->count() > 0;
  return false;
}

Settings& OptionFlags::finish() {
  if (given("full") && given("hashes")) throw UsageError("--full and --hashes-only exclude each other: pick one");
  for (const auto& [def, o] : flags_) {
    if (o->count() == 0) continue;
    const auto& results = o->results();
    if (def->repeats()) {
      for (const auto& v : results) add_option_value(settings_, *def, v);
    } else if (def->is_flag()) {
      set_option(settings_, *def, "");
    } else {
      set_option(settings_, *def, results.empty() ? std::string() : results.back());
    }
  }
  validate(settings_.run);
  return settings_;
}

void check_report_destinations(const CheckSettings& s) {
  for (const auto* path : {&s.json, &s.junit, &s.markdown, &s.html})
    if (!path->empty()) files::check_writable(*path, "report");
}

int report(const CheckSettings& s, const Report& r) {
  ReportOptions ro;
  ro.color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  // The verdict reaches the terminal first, even when a report file then cannot be written.
  fmt::print("{}", render_text(r, ro));
  std::fflush(stdout);
  if (!s.json.empty()) files::write_file_atomically(s.json, render_json(r), "report");
  if (!s.junit.empty()) files::write_file_atomically(s.junit, render_junit(r), "report");
  if (!s.markdown.empty()) files::write_file_atomically(s.markdown, render_markdown(r, ro), "report");
  if (!s.html.empty()) files::write_file_atomically(s.html, render_html(r), "report");
  return to_int(exit_code(r));
}

namespace {

int save_golden(const Settings& s, Runner& runner, const ProgressFn& on_event) {
  const bool hashes = s.check.capture != "full";
  auto dumps = runner.run(on_event, [hashes](RunOptions& r, int) { r.hashes_only = hashes; });
  files::copy_file_atomically(dumps[0], s.check.save_baseline, "--save-baseline golden", !s.check.force);
  fmt::print("wrote golden {} ({}, {}): compare with --baseline {}\n", s.check.save_baseline,
             hashes ? "hashes only" : "full", human_bytes(static_cast<double>(files::file_size(s.check.save_baseline))),
             s.check.save_baseline);
  return to_int(ExitCode::ok);
}

}  // namespace

int run_and_report(const Settings& s, const Given& given, std::shared_ptr<const WorkerLauncher> launcher,
                   const std::vector<std::string>& args) {
  const CompareOptions compare = compare_options(s, given);
  check_report_destinations(s.check);
  install_interrupt_handler();
  Runner runner(runner_options(s), std::move(launcher));
  Progress progress;
  auto on_event = [&](const WorkerEvent& e) { progress(e); };
  if (!s.check.save_baseline.empty()) return save_golden(s, runner, on_event);
  CheckOptions check = check_options(s);
  check.compare = compare;
  CheckResult result = run_check(runner, check, on_event);
  const std::vector<std::string>& dumps = result.dumps;
  Comparison comparison = std::move(result.comparison);
  comparison.command_line = args;
  std::optional<Isolation> isolation;
  if (s.check.isolate && comparison.divergent())
    isolation = isolate(comparison, compare, [&](const std::vector<std::string>& keys) {
      return runner.rerun_with_replay(dumps[0], keys, on_event);
    });
  const int code = report(s.check, make_report(std::move(comparison), std::move(isolation)));
  if (result.keep_error.empty()) return code;
  // The verdict stands; the dumps the user asked to keep are not there.
  fmt::print(stderr, "{}\n", error_line(result.keep_error));
  return std::max(code, to_int(ExitCode::usage));
}

Progress::Progress() : tty_(isatty(STDERR_FILENO) != 0) {}
Progress::~Progress() { clear(); }

void Progress::operator()(const WorkerEvent& e) {
  std::string label = e.label.empty() ? "" : fmt::format(" ({})", e.label);
  switch (e.kind) {
    case WorkerEvent::Kind::started:
      if (!tty_) fmt::print(stderr, "run {}/{}{}: started\n", e.index + 1, e.runs, label);
      break;
    case WorkerEvent::Kind::tick:
      if (tty_) {
        fmt::print(stderr, "\r\033[Krun {}/{}{}: running, {:.1f} s", e.index + 1, e.runs, label, e.seconds);
        shown_ = true;
      }
      break;
    case WorkerEvent::Kind::finished:
      clear();
      fmt::print(stderr, "run {}/{}{}: recorded {} in {:.2f} s\n", e.index + 1, e.runs, label,
                 human_bytes(static_cast<double>(e.dump_bytes)), e.seconds);
      for (const auto& m : e.messages) fmt::print(stderr, "  {}\n", m);
      break;
  }
  std::fflush(stderr);
}

void Progress::clear() {
  if (tty_ && shown_) fmt::print(stderr, "\r\033[K");
  shown_ = false;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string group_digits(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

namespace {
void on_signal(int) { request_interrupt(); }

int fail(const std::string& message, ExitCode code) {
  fmt::print(stderr, "{}\n", error_line(message));
  report_error_to_runner(message);
  return to_int(code);
}
}  // namespace

int guarded_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    return fail(e.what(), e.exit_code());
  } catch (const std::bad_alloc&) {
    return fail("out of memory; use a smaller --input-shape, fewer --steps, or a narrower --layers",
                ExitCode::run_failed);
  } catch (const std::exception& e) {
    return fail(fmt::format("internal error: {}; please report it", first_line(e.what())), ExitCode::run_failed);
  }
}

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = 0;  // a second Ctrl-C repeats the request: cleanup still runs
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace reprocheck::cli
