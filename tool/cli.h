// Pieces the commands share: command-line parsing, the run and comparison flags, progress lines
// and the report writer. Only the tool prints or exits.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "reprocheck/compare.h"
#include "reprocheck/report.h"
#include "reprocheck/run_options.h"
#include "reprocheck/runner.h"

namespace reprocheck::cli {

// Parses `args` into `app`. Returns -1 to go on, else the exit code: 0 after --help, 2 for a bad
// command line (one line on stderr).
int parse(CLI::App& app, std::vector<std::string> args);

// The options every command that runs a model shares (record, and the runner's workers): one CLI
// line per field of RunOptions.
struct RunFlags {
  RunOptions options;
  std::string input_shape;
  CLI::Option* deterministic = nullptr;
  void add_to(CLI::App& app);
  // The options with the flags' text parsed, validated. Throws UsageError.
  const RunOptions& finish();
};

// Options shared by the commands that compare (check and diff).
struct CompareFlags {
  double atol = -1, rtol = -1;
  std::string tolerance = "bitwise";
  std::string json, junit, markdown, html;
  void add_to(CLI::App& app);
  CompareOptions compare_options(const CLI::App& app) const;
  // Checks the report destinations before any work starts (throws InputError): a report that
  // cannot be written after the runs would hide their verdict behind exit code 2.
  void check_destinations() const;
  // Prints the text report, writes the requested files, returns the exit code.
  int report(const Report& r) const;
};

// The runner's flags, shared by the commands that run N fresh workers (check and run).
struct RunnerFlags {
  RunnerOptions options;
  std::string vary;
  bool isolate = false;
  bool full = false, hashes_only = false;  // the capture ladder's shortcuts: one pass, full or hashes
  std::string baseline;                    // compare with this golden instead of run 0
  std::string save_baseline;               // record one run into this golden and stop
  void add_to(CLI::App& app);
  // Sets options.run and the parsed --vary. Throws UsageError.
  void finish(const CLI::App& app, const RunOptions& run);
};

// Runs the workers, keeps their dumps if asked, compares, isolates if asked, and reports; returns
// the exit code.
int run_and_report(const RunnerFlags& runner_flags, std::shared_ptr<const WorkerLauncher> launcher,
                   const CompareFlags& compare_flags, const CLI::App& app);

// Progress of the workers on stderr: one updating line on a terminal, plain lines otherwise.
class Progress {
 public:
  Progress();
  ~Progress();
  void operator()(const WorkerEvent& e);

 private:
  void clear();
  bool tty_;
  bool shown_ = false;
};

std::string human_bytes(double bytes);
std::string group_digits(int64_t n);

// Runs a command's body and maps what it throws to one line on stderr (also left for a runner to
// relay, when this process is a run) and an exit code.
int guarded_main(const std::function<int()>& body);

// SIGINT and SIGTERM request an interrupt; a second one ends the process at once.
void install_interrupt_handler();

}  // namespace reprocheck::cli
