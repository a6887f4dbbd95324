// Cooperative interruption: a signal handler calls request_interrupt(); long-running library code
// calls check_interrupt() at safe points, which throws Interrupted so that destructors clean up
// (temporary dumps, worker processes).
#pragma once

#include <string>

#include "reprocheck/error.h"

namespace reprocheck {

class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted") {}
  ExitCode exit_code() const noexcept override { return ExitCode::interrupted; }
};

void request_interrupt() noexcept;  // async-signal-safe
bool interrupt_requested() noexcept;
void check_interrupt();
void reset_interrupt() noexcept;

// Files to remove if the process has to end before its destructors run (a forced exit on
// interrupt): temporary dumps and lock files register themselves while they exist.
void register_cleanup(const std::string& path);
void unregister_cleanup(const std::string& path);

// For a process that may be busy where it cannot check for interrupts (a long forward pass): once
// an interrupt is requested, a watchdog thread waits `grace_s` for the process to wind down on its
// own, then removes the registered files and ends it with exit code 130.
void start_interrupt_watchdog(double grace_s);

}  // namespace reprocheck
