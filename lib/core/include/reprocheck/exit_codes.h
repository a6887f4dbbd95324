// The command's contract with its callers (CI, scripts): exit codes and the error-line prefix.
// Precedence when several apply: interrupted (130) > a run failed (3) > usage or input error (2) >
// divergence found (1) > reproducible (0).
#pragma once

namespace reprocheck {

enum class ExitCode : int {
  ok = 0,           // reproducible (or a command that succeeded)
  divergent = 1,    // a divergence was found
  usage = 2,        // bad flag, unreadable model or dump
  run_failed = 3,   // a run crashed, was killed or timed out
  interrupted = 130,
};

inline constexpr int to_int(ExitCode c) { return static_cast<int>(c); }

// Every error the user sees is one line that starts with this.
inline constexpr const char* kErrorPrefix = "reprocheck: error: ";

// A worker started by the runner writes its one-line error (without the prefix) to the file this
// environment variable names, so the runner relays it without parsing the worker's stderr.
inline constexpr const char* kErrorFileEnv = "REPROCHECK_ERROR_FILE";

// Set (to anything but "" or "0") by the test suite: the library then checks its own invariants on
// every dump it writes or compares (no two records share a key; a dump compared with itself
// matches) and throws an error when one fails.
inline constexpr const char* kInvariantsEnv = "REPROCHECK_INVARIANTS";
bool invariants_checked();

}  // namespace reprocheck
