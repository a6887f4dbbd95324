// reprocheck._core: the core's dump writer and reader, hashing and layer selection for the Python
// front end. Tensors arrive as contiguous buffers (numpy arrays of the tensors' bytes); the hashers
// also take a contiguous CPU torch tensor as it is (its data_ptr() and nbytes), with no copy.
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/host.h"
#include "reprocheck/layers.h"
#include "reprocheck/protocol.h"
#include "reprocheck/version.h"

namespace py = pybind11;
namespace rc = reprocheck;

namespace {

rc::Phase phase_of(std::string_view s) {
  auto p = rc::parse_phase(s);
  if (!p) throw py::value_error("unknown phase '" + std::string(s) + "'");
  return *p;
}

rc::Kind kind_of(std::string_view s) {
  auto k = rc::parse_kind(s);
  if (!k) throw py::value_error("unknown kind '" + std::string(s) + "'");
  return *k;
}

// The bytes of a contiguous buffer, while `info` holds it.
std::pair<const void*, size_t> bytes_of(const py::buffer_info& info) {
  size_t n = static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize);
  if (n > 0) {
    ssize_t expected = info.itemsize;
    for (ssize_t i = info.ndim; i-- > 0;) {
      if (info.shape[i] > 1 && info.strides[i] != expected) throw py::value_error("buffer is not contiguous");
      expected *= info.shape[i];
    }
  }
  return {info.ptr, n};
}

std::pair<const void*, size_t> bytes_of(const py::buffer& data) { return bytes_of(data.request()); }

// The bytes a hasher reads: a buffer's (held in `held` while the GIL is released), or a torch
// tensor's from data_ptr() and nbytes. The caller vouches that such a tensor is a contiguous CPU
// tensor and keeps it alive (python/reprocheck/_util.py: hashable()).
std::pair<const void*, size_t> bytes_to_hash(const py::handle& item, std::vector<py::buffer_info>& held) {
  if (PyObject_CheckBuffer(item.ptr())) {
    held.push_back(py::reinterpret_borrow<py::buffer>(item).request());
    return bytes_of(held.back());
  }
  auto ptr = item.attr("data_ptr")().cast<uintptr_t>();
  auto n = item.attr("nbytes").cast<size_t>();
  return {reinterpret_cast<const void*>(ptr), n};
}

// The index row of one tensor as the capture describes it.
rc::TensorMeta make_meta(int step, std::string_view phase, std::string_view layer, std::string_view layer_type,
                         std::string_view kind, std::string_view name, int call, std::string_view dtype,
                         std::vector<int64_t> shape, std::optional<uint64_t> input_hash) {
  rc::TensorMeta meta;
  meta.step = step;
  meta.phase = phase_of(phase);
  meta.layer = layer;
  meta.layer_type = layer_type;
  meta.kind = kind_of(kind);
  meta.name = name;
  meta.call = call;
  meta.dtype = dtype;
  meta.shape = std::move(shape);
  meta.has_input_hash = input_hash.has_value();
  meta.input_hash = input_hash.value_or(0);
  return meta;
}

// A row's fields read with Python's C API: a step's rows are written in one call, and converting
// each field through pybind11 cost more than writing the row (0.84 us a row).
std::string_view str_field(PyObject* row, Py_ssize_t i) {
  PyObject* o = PyTuple_GET_ITEM(row, i);
  Py_ssize_t n = 0;
  const char* s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : nullptr;
  if (s == nullptr) {
    PyErr_Clear();
    throw py::type_error("a row's field " + std::to_string(i) + " is not a str");
  }
  return {s, static_cast<size_t>(n)};
}

int64_t int_of(PyObject* o, const char* what) {
  int64_t v = PyLong_Check(o) ? PyLong_AsLongLong(o) : -1;
  if (!PyLong_Check(o) || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    throw py::type_error(std::string("a row's ") + what + " is not an integer in range");
  }
  return v;
}

// A hash as Python holds it: modulo 2^64 (a device hash comes back as a signed 64-bit value).
uint64_t hash_of(PyObject* o) {
  if (!PyLong_Check(o)) throw py::type_error("a hash is not an integer");
  uint64_t v = PyLong_AsUnsignedLongLongMask(o);
  if (v == static_cast<uint64_t>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error("a hash is not an integer");
  }
  return v;
}

// (step, phase, layer, layer_type, kind, name, call, dtype, shape, ...), its input hash (or None) at
// `input_at`.
rc::TensorMeta meta_of_row(PyObject* row, Py_ssize_t input_at) {
  PyObject* shape = PyTuple_GET_ITEM(row, 8);
  if (!PyList_Check(shape) && !PyTuple_Check(shape)) throw py::type_error("a row's shape is not a list");
  std::vector<int64_t> dims(static_cast<size_t>(PySequence_Fast_GET_SIZE(shape)));
  for (size_t d = 0; d < dims.size(); ++d)
    dims[d] = int_of(PySequence_Fast_GET_ITEM(shape, static_cast<Py_ssize_t>(d)), "shape");
  PyObject* input = PyTuple_GET_ITEM(row, input_at);
  return make_meta(static_cast<int>(int_of(PyTuple_GET_ITEM(row, 0), "step")), str_field(row, 1), str_field(row, 2),
                   str_field(row, 3), str_field(row, 4), str_field(row, 5),
                   static_cast<int>(int_of(PyTuple_GET_ITEM(row, 6), "call")), str_field(row, 7), std::move(dims),
                   input == Py_None ? std::nullopt : std::optional<uint64_t>(hash_of(input)));
}

py::dict meta_dict(const rc::TensorMeta& m) {
  py::dict d;
  d["order"] = m.order;
  d["step"] = m.step;
  d["phase"] = rc::to_string(m.phase);
  d["layer"] = m.layer;
  d["layer_type"] = m.layer_type;
  d["kind"] = rc::to_string(m.kind);
  d["name"] = m.name;
  d["call"] = m.call;
  d["dtype"] = m.dtype;
  d["shape"] = m.shape;
  d["hash"] = m.hash;
  d["input_hash"] = m.has_input_hash ? py::object(py::int_(m.input_hash)) : py::object(py::none());
  d["key"] = m.key();
  return d;
}

}  // namespace

namespace {

void bind_writer(py::module_& m) {
  py::class_<rc::DumpWriter>(m, "DumpWriter")
      .def(py::init<std::string, bool, bool>(), py::arg("path"), py::arg("overwrite") = false,
           py::arg("hashes_only") = false)
      .def(
          "write_hash",
          [](rc::DumpWriter& w, int step, const std::string& phase, const std::string& layer,
             const std::string& layer_type, const std::string& kind, const std::string& name, int call,
             const std::string& dtype, std::vector<int64_t> shape, uint64_t hash, bool words,
             std::optional<uint64_t> input_hash) {
            rc::TensorMeta meta =
                make_meta(step, phase, layer, layer_type, kind, name, call, dtype, std::move(shape), input_hash);
            return w.write_hash(std::move(meta), hash, words).order;
          },
          py::arg("step"), py::arg("phase"), py::arg("layer"), py::arg("layer_type"), py::arg("kind"), py::arg("name"),
          py::arg("call"), py::arg("dtype"), py::arg("shape"), py::arg("hash"), py::arg("words"),
          py::arg("input_hash") = py::none(),
          "Stores one tensor's hash and no data (a hash-only dump): XXH3-64 of its bytes, or hash_words when "
          "`words` (computed on a device); returns its order.")
      .def(
          "write_pending",
          [](rc::DumpWriter& w, const py::list& pending, const std::vector<uint64_t>& device_hashes) {
            size_t next = 0;
            for (const auto& item : pending) {
              PyObject* p = item.ptr();
              if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 3)
                throw py::value_error("write_pending: an entry is a (row, value, words) tuple");
              PyObject* row = PyTuple_GET_ITEM(p, 0);
              if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 10)
                throw py::value_error("write_pending: a row is a tuple of 10 values");
              PyObject* value = PyTuple_GET_ITEM(p, 1);
              uint64_t hash = 0;
              if (PyLong_Check(value)) {
                hash = hash_of(value);
              } else {
                if (next >= device_hashes.size()) throw py::value_error("write_pending: too few device hashes");
                hash = device_hashes[next++];
              }
              w.write_hash(meta_of_row(row, 9), hash, PyObject_IsTrue(PyTuple_GET_ITEM(p, 2)));
            }
            if (next != device_hashes.size()) throw py::value_error("write_pending: too many device hashes");
          },
          py::arg("pending"), py::arg("device_hashes"),
          "write_hash for each (row, value, words) of a list, in order; a row is (step, phase, layer, layer_type, "
          "kind, name, call, dtype, shape, input_hash), a value the hash, or anything else for the next of "
          "device_hashes.")
      .def_property_readonly("hashes_only", &rc::DumpWriter::hashes_only)
      .def("keep_data_from", &rc::DumpWriter::keep_data_from, py::arg("plan_path"),
           "Keeps the data of the records listed in the capture plan (keys, one per line) in a hash-only dump.")
      .def("set_attribute", py::overload_cast<const std::string&, const std::string&>(&rc::DumpWriter::set_attribute))
      .def("set_attribute", py::overload_cast<const std::string&, int64_t>(&rc::DumpWriter::set_attribute))
      .def(
          "write",
          [](rc::DumpWriter& w, int step, const std::string& phase, const std::string& layer,
             const std::string& layer_type, const std::string& kind, const std::string& name, int call,
             const std::string& dtype, std::vector<int64_t> shape, const py::buffer& data,
             std::optional<uint64_t> input_hash, bool keep_data) {
            rc::TensorMeta meta =
                make_meta(step, phase, layer, layer_type, kind, name, call, dtype, std::move(shape), input_hash);
            auto [ptr, n] = bytes_of(data);
            const auto& written = w.write(std::move(meta), ptr, n, nullptr, keep_data);
            return py::make_tuple(written.order, written.hash);
          },
          py::arg("step"), py::arg("phase"), py::arg("layer"), py::arg("layer_type"), py::arg("kind"), py::arg("name"),
          py::arg("call"), py::arg("dtype"), py::arg("shape"), py::arg("data"), py::arg("input_hash") = py::none(),
          py::arg("keep_data") = false,
          "Stores one tensor (its bytes as a contiguous buffer; in a hash-only dump only its hash, unless the "
          "capture plan lists it or keep_data); returns (order, hash).")
      .def("commit", &rc::DumpWriter::commit)
      .def_property_readonly("tensor_count", &rc::DumpWriter::tensor_count)
      .def_property_readonly("bytes_written", &rc::DumpWriter::bytes_written)
      .def_property_readonly("path", &rc::DumpWriter::path);
}

void bind_reader(py::module_& m) {
  py::class_<rc::DumpReader>(m, "DumpReader")
      .def(py::init<std::string>())
      .def_property_readonly("attributes", &rc::DumpReader::attributes)
      .def("index",
           [](const rc::DumpReader& r) {
             py::list out;
             for (const auto& meta : r.index()) out.append(meta_dict(meta));
             return out;
           })
      .def("read_bytes", [](const rc::DumpReader& r, int64_t order) {
        if (order < 0 || static_cast<size_t>(order) >= r.index().size()) throw py::index_error("no such tensor");
        auto bytes = r.read(r.index()[static_cast<size_t>(order)]);
        return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      });
}

// The OpenMP runtime torch runs its CPU kernels on, when one is loaded (libgomp, as torch's Linux
// builds use): GOMP_parallel, the entry point of `#pragma omp parallel`. Right after a kernel its
// worker threads keep spinning on the other cores for a while; threads of our own would share those
// cores with them (measured: hashing a step's gradients on two std::threads right after backward ran
// no faster than on one), so the hashing runs on torch's team instead.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
GompParallel torch_omp_parallel() {
  static std::atomic<GompParallel> found{nullptr};
  GompParallel f = found.load();
  if (f == nullptr) {
    void* lib = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD);  // only one already loaded
    if (lib != nullptr) {
      f = reinterpret_cast<GompParallel>(dlsym(lib, "GOMP_parallel"));
      dlclose(lib);  // drops the reference NOLOAD took; torch's stays
      found.store(f);
    }
  }
  return f;
}

// XXH3 of each buffer, on up to `threads` threads (the calling one included, torch's OpenMP team
// when there is one) without the GIL.
std::vector<uint64_t> hash_many(const py::list& buffers, int threads) {
  std::vector<py::buffer_info> infos;
  std::vector<std::pair<const void*, size_t>> spans;
  infos.reserve(buffers.size());  // each held while the GIL is released
  spans.reserve(buffers.size());
  for (const auto& item : buffers) spans.push_back(bytes_to_hash(item, infos));
  rc::RunOnThreads on_torch_team;
  if (GompParallel parallel = torch_omp_parallel())
    on_torch_team = [parallel](size_t workers, const std::function<void()>& work) {
      auto call = [](void* w) { (*static_cast<const std::function<void()>*>(w))(); };
      parallel(call, const_cast<std::function<void()>*>(&work), static_cast<unsigned>(workers), 0);
    };
  py::gil_scoped_release release;
  return rc::hash_spans(spans, static_cast<size_t>(std::max(threads, 1)), on_torch_team);
}

void bind_hashes(py::module_& m) {
  m.def(
      "hash_bytes",
      [](const py::handle& data) {
        std::vector<py::buffer_info> held;
        auto [ptr, n] = bytes_to_hash(data, held);
        return rc::hash_bytes(ptr, n);
      },
      py::arg("data"), "XXH3 of a contiguous buffer or a contiguous CPU torch tensor.");
  m.def("hash_many", &hash_many, py::arg("buffers"), py::arg("threads"),
        "XXH3 of each contiguous buffer or contiguous CPU torch tensor, on up to `threads` threads "
        "without the GIL.");
  m.def(
      "hash_pool", [] { return torch_omp_parallel() != nullptr ? "openmp" : "threads"; },
      "The threads hash_many runs on: \"openmp\" (torch's OpenMP team) or \"threads\" (its own).");
  m.def("hash_words", [](const py::buffer& data) {
    auto [ptr, n] = bytes_of(data);
    return rc::hash_words(ptr, n);
  });
  m.def("combine_hash", &rc::combine_hash, py::arg("seed"), py::arg("hash"));
}

void bind_protocol_and_layers(py::module_& m) {
  m.def(
      "version", [] { return std::string(rc::kVersion); }, "reprocheck's version.");
  // The named protocols (reprocheck/protocol.h): dump attribute names, environment variables.
  auto attr = m.def_submodule("attr", "the dump's root attribute names");
  for (const auto& [name, value] : rc::attr::kAll) attr.attr(name) = value;
  auto env = m.def_submodule("env", "the environment variables a runner hands its workers");
  for (const auto& [name, value] : rc::env::kAll) env.attr(name) = value;
  m.attr("ERROR_PREFIX") = rc::kErrorPrefix;
  m.attr("HASH_WORDS_STRIDE") = rc::kHashWordsStride;
  m.attr("CUBLAS_WORKSPACE_CONFIG") = rc::kCublasWorkspaceConfig;
  m.def(
      "host_facts",
      [] {
        auto f = rc::host_facts();
        return py::make_tuple(f.host, f.cpu, f.time);
      },
      "(host, cpu model, UTC time): where this process runs, as every front end says it.");
  // (path, qualified type, category or "", leaf with parameters of its own), root first.
  using Module = std::tuple<std::string, std::string, std::string, bool>;
  auto refs_of = [](const std::vector<Module>& modules) {
    std::vector<rc::LayerRef> refs;
    for (const auto& [path, type, category, leaf] : modules)
      refs.push_back({path, type, category.empty() ? std::nullopt : rc::parse_layer_category(category), leaf});
    return refs;
  };
  m.def(
      "select_layers",
      [refs_of](const std::string& spec, const std::vector<Module>& modules) {
        return rc::select_layers(spec, refs_of(modules));
      },
      "Which of the (path, qualified type, category, leaf_with_params) modules, root first, a --layers spec "
      "selects. Raises reprocheck._core.Error for an unknown selector.");
  m.def(
      "sparse_selection_note",
      [refs_of](const std::string& spec, const std::vector<Module>& modules, const std::vector<bool>& selected) {
        return rc::sparse_selection_note(spec, refs_of(modules), selected);
      },
      "A note when the default selection taps almost nothing of a model with many leaf layers; '' otherwise.");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "reprocheck's dump writer and reader (the C++ core)";
  static py::exception<rc::Error> error(m, "Error");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const rc::Error& e) {
      error(e.what());
    }
  });

  bind_writer(m);
  bind_reader(m);
  bind_hashes(m);
  bind_protocol_and_layers(m);
}
