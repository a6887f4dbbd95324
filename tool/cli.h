// Pieces the commands share: command-line parsing, the run and comparison flags, progress lines
// and the report writer. Only the tool prints or exits.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "reprocheck/check_settings.h"
#include "reprocheck/compare.h"
#include "reprocheck/options.h"
#include "reprocheck/report.h"
#include "reprocheck/run_options.h"
#include "reprocheck/runner.h"

namespace reprocheck::cli {

// Parses `args` into `app`. Returns -1 to go on, else the exit code: 0 after --help, 2 for a bad
// command line (one line on stderr).
int parse(CLI::App& app, std::vector<std::string> args);

// A command's flags, made from the option table (reprocheck/options.h): every row the command takes.
class OptionFlags {
 public:
  // `model`: the command takes the model as its positional argument.
  OptionFlags(CLI::App& app, OptionCommand command, bool model);
  // Sets every given flag's value, in the table's order, checking each; then validates the run
  // options. Throws UsageError.
  Settings& finish();
  Settings& settings() { return settings_; }
  bool given(const char* key) const;
  Given given() const { return {given("runs"), given("tolerance") || given("atol") || given("rtol")}; }

 private:
  Settings settings_;
  std::vector<std::pair<const OptionDef*, CLI::Option*>> flags_;
};

// Checks the report destinations before any work starts (throws InputError): a report that cannot
// be written after the runs would hide their verdict behind exit code 2.
void check_report_destinations(const CheckSettings& s);
// Prints the text report, writes the requested files, returns the exit code.
int report(const CheckSettings& s, const Report& r);

// Runs the workers, keeps their dumps if asked, compares, isolates if asked, and reports; returns
// the exit code.
// `args`: the command's arguments as given, for the commands the report suggests.
int run_and_report(const Settings& s, const Given& given, std::shared_ptr<const WorkerLauncher> launcher,
                   const std::vector<std::string>& args);

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
