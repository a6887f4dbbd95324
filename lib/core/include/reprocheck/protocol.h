// The protocols between reprocheck's processes and files, named once: the dump's root attribute
// names (docs/dump-format.md), the environment variables a runner hands its workers, the error
// line's prefix, the hash_words stride. reprocheck._core exports them to the Python capture
// (reprocheck._core.attr, reprocheck._core.env), so both sides of the binding spell them alike.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

namespace reprocheck {

// Every error the user sees is one line that starts with this.
inline constexpr const char* kErrorPrefix = "reprocheck: error: ";

// The stride of hash_words (docs/dump-format.md): sum_i w_i * (i * stride + 1) + nbytes mod 2^64.
inline constexpr uint64_t kHashWordsStride = 0x3C6EF372FE94F82AULL;

// CUBLAS_WORKSPACE_CONFIG for deterministic cuBLAS (set with --deterministic).
inline constexpr const char* kCublasWorkspaceConfig = ":4096:8";

namespace env {
// A worker started by the runner writes its one-line error (without the prefix) to this file, so
// the runner relays it without parsing the worker's stderr.
inline constexpr const char* kErrorFile = "REPROCHECK_ERROR_FILE";
// Set (to anything but "" or "0") by the test suite: the library checks its own invariants on every
// dump it writes or compares.
inline constexpr const char* kInvariants = "REPROCHECK_INVARIANTS";
// The Python capture (docs/python.md): the dump to write, the run options as JSON, replay.
inline constexpr const char* kCapture = "REPROCHECK_CAPTURE";
inline constexpr const char* kRunOptions = "REPROCHECK_RUN_OPTIONS";
inline constexpr const char* kReplay = "REPROCHECK_REPLAY";
inline constexpr const char* kReplayKeys = "REPROCHECK_REPLAY_KEYS";
inline constexpr std::pair<const char*, const char*> kAll[] = {
    {"ERROR_FILE", kErrorFile},   {"INVARIANTS", kInvariants}, {"CAPTURE", kCapture},
    {"RUN_OPTIONS", kRunOptions}, {"REPLAY", kReplay},         {"REPLAY_KEYS", kReplayKeys}};
}  // namespace env

// The dump's root attributes.
namespace attr {
inline constexpr const char* kBenchmark = "benchmark";
inline constexpr const char* kCapture = "capture";
inline constexpr const char* kCaptureNotes = "capture_notes";
inline constexpr const char* kCudaDriverVersion = "cuda_driver_version";
inline constexpr const char* kCudaVersion = "cuda_version";
inline constexpr const char* kCudnnVersion = "cudnn_version";
inline constexpr const char* kCpu = "cpu";    // the CPU's model, whatever the device
inline constexpr const char* kBlas = "blas";  // the BLAS LibTorch uses ("mkl", "open")
inline constexpr const char* kDataLoaders = "data_loaders";
inline constexpr const char* kDataSeed = "data_seed";
inline constexpr const char* kDataSeedMode = "data_seed_mode";
inline constexpr const char* kDeterministic = "deterministic";
inline constexpr const char* kDevice = "device";
inline constexpr const char* kDeviceName = "device_name";
inline constexpr const char* kDropoutElements = "dropout_elements";
inline constexpr const char* kEvalFrozenOps = "eval_frozen_ops";
inline constexpr const char* kFormat = "format";
inline constexpr const char* kFormatVersion = "format_version";
inline constexpr const char* kFrontEnd = "front_end";
inline constexpr const char* kHost = "host";
inline constexpr const char* kIgnoredOutputs = "ignored_outputs";
inline constexpr const char* kLayerCategories = "layer_categories";
inline constexpr const char* kLayerFallback = "layer_fallback";
inline constexpr const char* kLayers = "layers";
inline constexpr const char* kLibtorchVersion = "libtorch_version";
inline constexpr const char* kLossRecipe = "loss_recipe";
inline constexpr const char* kLossRecipeNote = "loss_recipe_note";
inline constexpr const char* kMode = "mode";
inline constexpr const char* kModel = "model";
inline constexpr const char* kModelHash = "model_hash";
inline constexpr const char* kModelRngDraws = "model_rng_draws";
inline constexpr const char* kModelSignature = "model_signature";
inline constexpr const char* kNonfiniteLoss = "nonfinite_loss";
inline constexpr const char* kOpGenerators = "op_generators";
// A JSON object written by a drill-down run (pass 3): {"step", "scope", "ops": {record layer: {"op",
// "module", "phase", "file", "line", "stack": ["file:line in function", ...], "generator", "node"}}}.
inline constexpr const char* kOpSources = "op_sources";
inline constexpr const char* kPythonVersion = "python_version";
inline constexpr const char* kRanks = "ranks";
inline constexpr const char* kReplicaNotes = "replica_notes";
inline constexpr const char* kReprocheckVersion = "reprocheck_version";
inline constexpr const char* kRunOptions = "run_options";
inline constexpr const char* kSeed = "seed";
inline constexpr const char* kSeedMode = "seed_mode";
// A JSON object: each sharded tensor's name (rankR/ prefixed in a merged dump) -> where its local
// shard sits in the full tensor (placements, mesh, shape, local, offset, slice, replicated).
inline constexpr const char* kShards = "shards";
inline constexpr const char* kSteps = "steps";
inline constexpr const char* kTensorCount = "tensor_count";
inline constexpr const char* kThreads = "threads";
inline constexpr const char* kTorchThreads = "torch_threads";  // the intra-op threads the run had
inline constexpr const char* kTime = "time";
inline constexpr const char* kUninitializedOpsNotRecorded = "uninitialized_ops_not_recorded";
inline constexpr const char* kHdf5Version = "hdf5_version";
inline constexpr const char* kTf32Cublas = "tf32_cublas";
inline constexpr const char* kTf32Cudnn = "tf32_cudnn";
inline constexpr const char* kFloat32MatmulPrecision = "float32_matmul_precision";
inline constexpr std::pair<const char*, const char*> kAll[] = {
    {"BENCHMARK", kBenchmark},
    {"BLAS", kBlas},
    {"CAPTURE", kCapture},
    {"CAPTURE_NOTES", kCaptureNotes},
    {"CPU", kCpu},
    {"CUDA_DRIVER_VERSION", kCudaDriverVersion},
    {"CUDA_VERSION", kCudaVersion},
    {"CUDNN_VERSION", kCudnnVersion},
    {"DATA_LOADERS", kDataLoaders},
    {"DATA_SEED", kDataSeed},
    {"DATA_SEED_MODE", kDataSeedMode},
    {"DETERMINISTIC", kDeterministic},
    {"DEVICE", kDevice},
    {"DEVICE_NAME", kDeviceName},
    {"DROPOUT_ELEMENTS", kDropoutElements},
    {"EVAL_FROZEN_OPS", kEvalFrozenOps},
    {"FORMAT", kFormat},
    {"FORMAT_VERSION", kFormatVersion},
    {"FRONT_END", kFrontEnd},
    {"HOST", kHost},
    {"IGNORED_OUTPUTS", kIgnoredOutputs},
    {"LAYER_CATEGORIES", kLayerCategories},
    {"LAYER_FALLBACK", kLayerFallback},
    {"LAYERS", kLayers},
    {"LIBTORCH_VERSION", kLibtorchVersion},
    {"LOSS_RECIPE", kLossRecipe},
    {"LOSS_RECIPE_NOTE", kLossRecipeNote},
    {"MODE", kMode},
    {"MODEL", kModel},
    {"MODEL_HASH", kModelHash},
    {"MODEL_RNG_DRAWS", kModelRngDraws},
    {"MODEL_SIGNATURE", kModelSignature},
    {"NONFINITE_LOSS", kNonfiniteLoss},
    {"OP_GENERATORS", kOpGenerators},
    {"OP_SOURCES", kOpSources},
    {"PYTHON_VERSION", kPythonVersion},
    {"RANKS", kRanks},
    {"REPLICA_NOTES", kReplicaNotes},
    {"REPROCHECK_VERSION", kReprocheckVersion},
    {"RUN_OPTIONS", kRunOptions},
    {"SEED", kSeed},
    {"SEED_MODE", kSeedMode},
    {"SHARDS", kShards},
    {"STEPS", kSteps},
    {"TENSOR_COUNT", kTensorCount},
    {"THREADS", kThreads},
    {"TORCH_THREADS", kTorchThreads},
    {"TIME", kTime},
    {"UNINITIALIZED_OPS_NOT_RECORDED", kUninitializedOpsNotRecorded},
    {"HDF5_VERSION", kHdf5Version},
    {"TF32_CUBLAS", kTf32Cublas},
    {"TF32_CUDNN", kTf32Cudnn},
    {"FLOAT32_MATMUL_PRECISION", kFloat32MatmulPrecision},
};
}  // namespace attr

}  // namespace reprocheck
