// Cooperative interruption: a signal handler calls request_interrupt(); long-running library code
// calls check_interrupt() at safe points, which throws Interrupted so that destructors clean up
// (temporary dumps, worker processes).
#pragma once

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

}  // namespace reprocheck
