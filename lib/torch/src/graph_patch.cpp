#include "graph_patch.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <functional>
#include <map>
#include <regex>
#include <set>

#include "reprocheck/error.h"
#include "reprocheck/layers.h"

namespace reprocheck::detail {

namespace {

constexpr const char* kIdAttr = "_reprocheck_id";

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

bool is_tensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

Node* insert_tap(Graph& g, const char* op, std::vector<Value*> inputs) {
  Node* n = g.create(c10::Symbol::fromQualString(op), inputs, 0);
  return g.insertNode(n);
}

// The tensors of a value: itself, or the tensor elements of a tuple (unpacked in the graph).
std::vector<Value*> tensors_of(Graph& g, Value* v) {
  if (is_tensor(v)) return {v};
  std::vector<Value*> out;
  if (v->type()->kind() == c10::TypeKind::TupleType) {
    Node* unpack = g.insertNode(g.createTupleUnpack(v));
    for (Value* e : unpack->outputs())
      if (is_tensor(e)) out.push_back(e);
  }
  return out;
}

// Ops whose output is uninitialized memory by contract: never recorded (they would differ from run
// to run without anything being wrong).
bool uninitialized_output(const Node* n) {
  static const std::set<std::string> kNames = {"empty",         "empty_like",        "new_empty",
                                               "empty_strided", "new_empty_strided", "empty_permuted"};
  return n->kind().ns().toUnqualString() == std::string("aten") && kNames.count(n->kind().toUnqualString());
}

// Whether the op returns a view of an input without writing it (a no-op .to(), .contiguous(),
// .view()): the same storage as a value already recorded, and hooks on it would fire in an order
// that depends on autograd's bookkeeping.
bool returns_alias(const Node* n) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (!schema || schema->returns().empty()) return false;
  const auto* alias = schema->returns()[0].alias_info();
  return alias && !alias->isWrite();
}

// Ops with one tensor output: aten ops and custom ops (torch.ops.NS.op), not the interpreter's
// prim nodes nor reprocheck's own taps. With `taps`, not the ops whose outputs must not be recorded
// either (counted in *uninitialized).
void collect_ops(torch::jit::Block* b, std::vector<Node*>& out, bool taps = false, int* uninitialized = nullptr) {
  for (Node* n : b->nodes()) {
    for (auto* sub : n->blocks()) collect_ops(sub, out, taps, uninitialized);
    const std::string ns = n->kind().ns().toUnqualString();
    if (ns == "prim" || ns == "reprocheck" || ns == "attr" || ns == "scope" || ns == "namespaces") continue;
    if (n->outputs().size() != 1 || !is_tensor(n->output())) continue;
    if (taps && uninitialized_output(n)) {
      if (uninitialized) ++*uninitialized;
      continue;
    }
    if (taps && returns_alias(n)) continue;
    out.push_back(n);
  }
}

// Inlines the calls a module's forward makes to free functions and to its own methods (Conv2d's
// forward calls self._conv_forward), so that op taps reach the ops those run. Calls to submodules
// stay calls: each submodule's ops are tapped in its own graph, under its own path.
void inline_local_calls(Graph& g) {
  Value* self = g.inputs()[0];
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<Node*> calls;
    std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* b) {
      for (Node* n : b->nodes()) {
        for (auto* sub : n->blocks()) walk(sub);
        bool local =
            n->kind() == c10::prim::CallFunction || (n->kind() == c10::prim::CallMethod && n->input(0) == self);
        if (local && torch::jit::tryToGraphFunction(n)) calls.push_back(n);
      }
    };
    walk(g.block());
    for (Node* n : calls) {
      torch::jit::GraphFunction* fn = torch::jit::tryToGraphFunction(n);
      if (n->kind() == c10::prim::CallFunction) n->removeInput(0);  // the function constant
      torch::jit::inlineCallTo(n, fn);
      changed = true;
    }
  }
}

// An op's source line in the model's Python source, "" when the graph does not have it.
std::string source_line(const Node* n) {
  auto flc = n->sourceRange().file_line_col();
  if (!flc) return "";
  return fmt::format("{}:{}", std::get<0>(*flc), std::get<1>(*flc));
}

// The gradients an op's backward produces, named after its tensor arguments.
std::vector<std::string> grad_names(const Node* n) {
  std::vector<std::string> out;
  const auto* schema = n->maybeSchema();
  if (!schema) return out;
  for (const auto& a : schema->arguments())
    if (a.type()->kind() == c10::TypeKind::TensorType) out.push_back("grad_" + a.name());
  return out;
}

// Patches one module type's forward graph. Returns the ops tapped (for op taps), in order.
struct TappedOps {
  std::vector<std::string> names, sources;
  std::vector<std::vector<std::string>> grad_names;
};

TappedOps patch_graph(Graph& g, bool layer_taps, bool op_taps, int* uninitialized) {
  Value* self = g.inputs()[0];
  TappedOps tapped;
  if (op_taps) {
    inline_local_calls(g);
    std::vector<Node*> ops;
    collect_ops(g.block(), ops, /*taps=*/true, uninitialized);
    for (size_t k = 0; k < ops.size(); ++k) {
      Node* n = ops[k];
      tapped.names.push_back(n->kind().toQualString());
      tapped.sources.push_back(source_line(n));
      tapped.grad_names.push_back(grad_names(n));
      torch::jit::WithInsertPoint guard(n->next());
      Value* id = g.insertGetAttr(self, kIdAttr);
      insert_tap(g, "reprocheck::tap_op", {n->output(), id, g.insertConstant(static_cast<int64_t>(k))});
    }
  }
  if (layer_taps) {
    {
      Node* first = g.block()->nodes().front();
      torch::jit::WithInsertPoint guard(first);
      std::vector<Value*> ins;
      for (size_t i = 1; i < g.inputs().size(); ++i)
        if (is_tensor(g.inputs()[i])) ins.push_back(g.inputs()[i]);
      Value* list = g.insertNode(g.createList(c10::TensorType::get(), ins))->output();
      insert_tap(g, "reprocheck::tap_in", {list, g.insertGetAttr(self, kIdAttr)});
    }
    torch::jit::WithInsertPoint guard(g.return_node());
    std::vector<Value*> outs = tensors_of(g, g.outputs()[0]);
    Value* list = g.insertNode(g.createList(c10::TensorType::get(), outs))->output();
    insert_tap(g, "reprocheck::tap_out", {list, g.insertGetAttr(self, kIdAttr)});
  }
  return tapped;
}

std::string layer_types_of(const std::vector<ModuleInfo>& mods) {
  std::set<std::string> kinds;
  for (size_t i = 1; i < mods.size(); ++i) kinds.insert(mods[i].kind);
  return fmt::format("{}", fmt::join(kinds, ", "));
}

}  // namespace

LayerCategories categories_by_ops(const torch::jit::Module& module) {
  LayerCategories out;
  std::set<const c10::ClassType*> seen;
  for (const auto& item : module.named_modules()) {
    auto type = item.value.type();
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn || !seen.insert(type.get()).second) continue;
    auto g = torch::jit::toGraphFunction(*fn).graph()->copy();
    inline_local_calls(*g);
    std::vector<std::string> ops;
    std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* b) {
      for (Node* n : b->nodes()) {
        for (auto* sub : n->blocks()) walk(sub);
        if (n->kind().is_aten()) ops.emplace_back(n->kind().toUnqualString());
      }
    };
    walk(g->block());
    if (auto c = category_of_ops(ops))
      out.set(demangle_type_name(type->name() ? type->name()->qualifiedName() : ""), *c);
  }
  return out;
}

Instrumented instrument(torch::jit::Module& module, const RunOptions& o, const std::vector<ModuleInfo>& mods) {
  Instrumented result;
  result.categories = categories_by_ops(module);
  std::vector<LayerRef> refs;
  for (size_t i = 0; i < mods.size(); ++i) {
    bool leaf = true;
    for (size_t j = i + 1; j < mods.size() && leaf; ++j) leaf = mods[j].path.rfind(mods[i].path + ".", 0) != 0;
    refs.push_back(
        {mods[i].path, mods[i].type, result.categories.of(mods[i].type), i > 0 && leaf && mods[i].own_params > 0});
  }
  std::vector<bool> sel = select_layers(o.layers, refs);
  size_t n_sel = std::count(sel.begin(), sel.end(), true);
  if (auto note = sparse_selection_note(o.layers, refs, sel); !note.empty()) result.notes.push_back(note);
  if (n_sel == 0 && o.layers == "default" && mods.size() > 1) {
    // No conv, dropout or batch norm (an LSTM, an embedding model): every leaf layer instead.
    for (size_t i = 1; i < mods.size(); ++i) {
      bool leaf = true;
      for (size_t j = 1; j < mods.size() && leaf; ++j) leaf = mods[j].path.rfind(mods[i].path + ".", 0) != 0;
      sel[i] = leaf;
    }
    n_sel = std::count(sel.begin(), sel.end(), true);
    result.leaf_fallback = true;
    result.notes.clear();
  }
  if (n_sel == 0 && !o.ops && o.layers != "none") {
    if (mods.size() <= 1)
      throw InputError(
          fmt::format("--layers {} selects nothing in model '{}': it has no submodules (a frozen or "
                      "fully inlined model); use --ops to tap the ops of its forward graph",
                      o.layers, o.model));
    throw InputError(
        fmt::format("--layers {} selects nothing in model '{}'; its layer types are: {}; pass one of "
                    "them, 'all', or --ops",
                    o.layers, o.model, layer_types_of(mods)));
  }
  // Pass 3 (a drill-down) taps every op too; only its step's are recorded.
  const bool op_taps = o.ops || o.drill_step >= 0;
  std::vector<Site> sites(mods.size());
  std::vector<torch::jit::Module> instances;
  for (const auto& item : module.named_modules()) instances.push_back(item.value);
  // Types to patch: those of selected instances, or every type for --ops.
  std::map<c10::ClassType*, std::vector<size_t>> type_instances;
  for (size_t i = 0; i < instances.size(); ++i) type_instances[instances[i].type().get()].push_back(i);
  for (auto& [type, idx] : type_instances) {
    bool any_layer = false;
    for (size_t i : idx) any_layer |= static_cast<bool>(sel[i]);
    if (!any_layer && !op_taps) continue;
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn) continue;
    type->addOrCheckAttribute(kIdAttr, c10::IntType::get());
    int uninitialized = 0;
    auto tapped = patch_graph(*torch::jit::toGraphFunction(*fn).graph(), any_layer, op_taps, &uninitialized);
    result.uninitialized_ops += uninitialized;
    for (size_t i : idx) {
      instances[i]._ivalue()->setAttr(kIdAttr, c10::IValue(static_cast<int64_t>(i)));
      sites[i].op_names = tapped.names;
      sites[i].op_sources = tapped.sources;
      sites[i].op_grad_names = tapped.grad_names;
    }
  }
  for (size_t i = 0; i < mods.size(); ++i) {
    sites[i].path = mods[i].path;
    sites[i].type = mods[i].type;
    sites[i].kind = mods[i].kind;
    sites[i].layer = sel[i];
    sites[i].dropout = result.categories.is(mods[i].type, LayerCategory::dropout);
  }
  result.sites = std::move(sites);
  return result;
}

namespace {

// The layers whose forward graph (with its own methods and functions inlined) runs an op named
// `base` ("upsample_bilinear2d", "put_"), as "path (Type)".
std::vector<std::string> layers_running(const torch::jit::Module& module, const std::string& base) {
  std::vector<std::string> out;
  std::set<const c10::ClassType*> seen;
  for (const auto& item : module.named_modules()) {
    auto type = item.value.type();
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn || seen.count(type.get())) continue;
    seen.insert(type.get());
    auto g = torch::jit::toGraphFunction(*fn).graph()->copy();
    inline_local_calls(*g);
    std::vector<Node*> ops;
    collect_ops(g->block(), ops);
    for (Node* n : ops) {
      std::string name = n->kind().toUnqualString();
      if (name == base || name == base + "_" || (!base.empty() && base.back() == '_' && name + "_" == base)) {
        std::string path = item.name.empty() ? "<model>" : item.name;
        out.push_back(fmt::format("'{}' ({})", path, demangle_type_name(type->name()->qualifiedName())));
        break;
      }
    }
  }
  return out;
}

}  // namespace

int frozen_training_ops(const torch::jit::Module& module) {
  static const std::set<std::string> kTrainArgument = {
      "dropout",    "dropout_",     "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
      "batch_norm", "instance_norm"};
  int frozen = 0;
  std::set<const c10::ClassType*> seen;
  for (const auto& item : module.named_modules()) {
    auto type = item.value.type();
    torch::jit::Function* fn = type->findMethod("forward");
    if (!fn || !seen.insert(type.get()).second) continue;
    auto g = torch::jit::toGraphFunction(*fn).graph()->copy();
    inline_local_calls(*g);
    std::vector<Node*> ops;
    collect_ops(g->block(), ops);
    for (Node* n : ops) {
      if (n->kind().ns().toUnqualString() != std::string("aten") || !kTrainArgument.count(n->kind().toUnqualString()))
        continue;
      const c10::FunctionSchema* schema = n->maybeSchema();
      if (!schema) continue;
      auto index = schema->argumentIndexWithName("train");
      if (!index) index = schema->argumentIndexWithName("training");
      if (!index) continue;
      auto value = torch::jit::toIValue(n->input(*index));
      if (value && value->isBool() && !value->toBool()) ++frozen;
    }
  }
  return frozen;
}

std::string deterministic_error(const std::string& msg, const torch::jit::Module& module, const c10::Device& device) {
  static const std::regex re(R"(([A-Za-z0-9_]+) does not have a deterministic implementation)");
  std::smatch m;
  if (!std::regex_search(msg, m, re)) return "";
  std::string op = m[1];
  std::string base = op;
  for (const char* suffix : {"_cuda_", "_cuda", "_cpu_", "_cpu", "_out", "_backward"}) {
    std::string sfx = suffix;
    if (base.size() > sfx.size() && base.compare(base.size() - sfx.size(), sfx.size(), sfx) == 0)
      base.erase(base.size() - sfx.size());
  }
  auto layers = layers_running(module, base);
  std::string where = layers.empty()
                          ? ""
                          : fmt::format(" in layer {}{}", layers.front(),
                                        layers.size() > 1 ? fmt::format(" (and {} more)", layers.size() - 1) : "");
  return fmt::format(
      "--deterministic: aten::{}{} has no deterministic implementation on {} (LibTorch raised it for {}); "
      "run with --deterministic=warn to run it anyway with a warning, or replace the op",
      base, where, device.is_cuda() ? "CUDA" : "the CPU", op);
}

}  // namespace reprocheck::detail
