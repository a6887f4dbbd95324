"""Type stub of reprocheck._core, the C++ core bound with pybind11 (python/src/binding.cpp)."""
from collections.abc import Sequence
from typing import Any

class Error(Exception): ...

class DumpWriter:
    def __init__(self, path: str, overwrite: bool = False, hashes_only: bool = False) -> None: ...
    def write(self, step: int, phase: str, layer: str, layer_type: str, kind: str, name: str, call: int,
              dtype: str, shape: Sequence[int], data: Any, input_hash: int | None = None,
              keep_data: bool = False) -> tuple[int, int]: ...
    def write_hash(self, step: int, phase: str, layer: str, layer_type: str, kind: str, name: str, call: int,
                   dtype: str, shape: Sequence[int], hash: int, words: bool,
                   input_hash: int | None = None) -> int: ...
    def write_pending(self, pending: list[tuple[Any, ...]], device_hashes: list[int]) -> None: ...
    def set_attribute(self, name: str, value: str | int) -> None: ...
    def keep_data_from(self, plan_path: str) -> None: ...
    def commit(self) -> None: ...
    @property
    def hashes_only(self) -> bool: ...
    @property
    def tensor_count(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def path(self) -> str: ...

class DumpReader:
    def __init__(self, path: str) -> None: ...
    @property
    def attributes(self) -> dict[str, str]: ...
    def index(self) -> list[dict[str, Any]]: ...
    def read_bytes(self, order: int) -> bytes: ...

def version() -> str: ...
def host_facts() -> tuple[str, str, str]: ...
def hash_bytes(data: Any) -> int: ...
def hash_many(buffers: list[Any], threads: int) -> list[int]: ...  # buffers or contiguous CPU tensors
def hash_pool() -> str: ...
def hash_words(data: Any) -> int: ...
def combine_hash(seed: int, hash: int) -> int: ...
def select_layers(spec: str, modules: Sequence[tuple[str, str, str, bool]]) -> list[bool]: ...
def sparse_selection_note(
    spec: str, modules: Sequence[tuple[str, str, str, bool]], selected: Sequence[bool]
) -> str: ...

ERROR_PREFIX: str
HASH_WORDS_STRIDE: int
CUBLAS_WORKSPACE_CONFIG: str

class attr:
    """The dump's root attribute names (reprocheck/protocol.h)."""
    BENCHMARK: str
    BLAS: str
    CAPTURE: str
    CAPTURE_NOTES: str
    CPU: str
    CUDA_DRIVER_VERSION: str
    CUDA_VERSION: str
    CUDNN_VERSION: str
    DATA_LOADERS: str
    DATA_SEED: str
    DATA_SEED_MODE: str
    DETERMINISTIC: str
    DEVICE: str
    DEVICE_NAME: str
    DROPOUT_ELEMENTS: str
    EVAL_FROZEN_OPS: str
    FLOAT32_MATMUL_PRECISION: str
    FORMAT: str
    FORMAT_VERSION: str
    FRONT_END: str
    HDF5_VERSION: str
    HOST: str
    IGNORED_OUTPUTS: str
    LAYERS: str
    LAYER_CATEGORIES: str
    LAYER_FALLBACK: str
    LIBTORCH_VERSION: str
    LOSS_RECIPE: str
    LOSS_RECIPE_NOTE: str
    MODE: str
    MODEL: str
    MODEL_HASH: str
    MODEL_RNG_DRAWS: str
    MODEL_SIGNATURE: str
    NONFINITE_LOSS: str
    OP_GENERATORS: str
    OP_SOURCES: str
    PYTHON_VERSION: str
    RANKS: str
    REPLICA_NOTES: str
    REPROCHECK_VERSION: str
    RUN_OPTIONS: str
    SEED: str
    SEED_MODE: str
    SHARDS: str
    STEPS: str
    TENSOR_COUNT: str
    TF32_CUBLAS: str
    TF32_CUDNN: str
    THREADS: str
    TORCH_THREADS: str
    TIME: str
    UNINITIALIZED_OPS_NOT_RECORDED: str

class env:
    """The environment variables a runner hands its workers (reprocheck/protocol.h)."""
    CAPTURE: str
    ERROR_FILE: str
    INVARIANTS: str
    REPLAY: str
    REPLAY_KEYS: str
    RUN_OPTIONS: str
