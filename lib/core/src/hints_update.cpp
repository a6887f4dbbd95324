// The hints of a difference that a value from outside torch's ops or the step itself made: an op
// of pass 3 that read a differing value no captured op made, and a parameter or optimizer state
// that is the first record to differ after identical gradients.
#include <fmt/format.h>

#include "hints_evidence.h"

namespace reprocheck::hints_detail {

// Pass 3's first divergent op read an input that differed while every op before it matched: a
// tensor made outside torch's ops, from randomness the seeds do not reach.
std::optional<Proposal> outside_input(const Evidence& e) {
  if (!e.outside_input() || e.seed_differs()) return std::nullopt;
  return Proposal{"outside_input",
                  "a value made outside torch's ops differs",
                  fmt::format("the first divergence is {}{}; every op before pass 3's first divergent op matched, "
                              "yet that op's inputs differed: a tensor or number made outside torch's ops "
                              "(torch.from_numpy, a value computed in Python, a file) from a source the seeds do "
                              "not reach{}",
                              where(*e.headline), e.on_rank(), rng_note(e.rngs)),
                  "seed what makes that value: np.random.default_rng(0) (np.random.seed(0) does not seed the "
                  "Generator API), random.Random(0), torch.Generator().manual_seed(0); nothing from the clock or "
                  "the OS",
                  "-",
                  ""};
}

// A parameter or optimizer state that differs after the step while every record before it matched
// (the gradients as backward left them, the parameters before, the RNG states at the step's start):
// the step itself made the difference. A layer selection cannot localize it further.
std::optional<Proposal> step_update(const Evidence& e) {
  const auto& d = *e.headline;
  if (!d.inputs_identical.value_or(false) || d.ref.phase != Phase::after_step ||
      (d.ref.kind != Kind::param && d.ref.kind != Kind::optim_state) || e.seed_differs())
    return std::nullopt;
  const bool threads = e.differs("threads");
  if (e.script)
    return Proposal{
        "step_update",
        "the step changed identical parameters differently",
        fmt::format("{}{} is the first record that differs, and every record before it matched: the gradients as "
                    "backward left them, the parameters before the step and the RNG states at its start{}. The "
                    "difference arose between loss.backward() and the step's end: in code there (gradient noise, "
                    "clipping, in-place edits of .grad or the parameters) or in the optimizer's update",
                    where(d), e.on_rank(), knob_note(e, {"threads"})),
        std::string("draw any randomness there from a seeded generator (np.random.default_rng(0), "
                    "torch.Generator().manual_seed(0); np.random.seed(0) does not seed default_rng()) and take "
                    "nothing there from the clock or the OS") +
            (threads ? "; the same torch.set_num_threads(N) in every run (a gradient norm for clipping is a sum "
                       "split by thread)"
                     : ""),
        "-",
        ""};
  const bool cuda = e.cuda(), one_thread = !cuda && e.options.threads == 1;
  const std::string flag = cuda ? "--deterministic" : one_thread ? "-" : "--threads 1";
  return Proposal{
      "step_update",
      "the optimizer's update differs from identical inputs",
      fmt::format("{} is the first record that differs, and every record before it matched, the gradients "
                  "included: the {} update gave different values from identical parameters, gradients and state on "
                  "{}{}{}",
                  where(d), e.options.optimizer.empty() ? "optimizer's" : e.options.optimizer,
                  e.device.empty() ? "cpu" : e.device, one_thread ? " at one intra-op thread" : "",
                  knob_note(e, {"threads"})),
      cuda         ? "torch.use_deterministic_algorithms(True)"
      : one_thread ? "-"
                   : "torch.set_num_threads(N) with the same N in every run; at one thread the update's kernels do "
                     "not split their work",
      flag,
      flag == "-" ? "" : flag};
}

}  // namespace reprocheck::hints_detail
