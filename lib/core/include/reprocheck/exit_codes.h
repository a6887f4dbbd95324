// The command's contract with its callers (CI, scripts): exit codes and the error-line prefix.
// Precedence when several apply: interrupted (130) > a run failed (3) > usage or input error (2) >
// divergence found (1) > reproducible (0).
#pragma once

#include "reprocheck/protocol.h"

namespace reprocheck {

enum class ExitCode : int {
  ok = 0,          // reproducible (or a command that succeeded)
  divergent = 1,   // a divergence was found
  usage = 2,       // bad flag, unreadable model or dump
  run_failed = 3,  // a run crashed, was killed or timed out
  interrupted = 130,
};

inline constexpr int to_int(ExitCode c) { return static_cast<int>(c); }

// The error prefix and the environment variables are in protocol.h.
inline constexpr const char* kErrorFileEnv = env::kErrorFile;
inline constexpr const char* kInvariantsEnv = env::kInvariants;
// Whether the test suite asked for the library's invariants to be checked (env::kInvariants).
bool invariants_checked();

}  // namespace reprocheck
