// Layer categories (conv, dropout, batch norm, ...) and --layers selection. One definition, used by
// capture (--layers) and by the cause hints, so that both agree on what a conv is.
//
// A layer belongs to a category by what it is, which its front end tells: in Python, a module
// whose class derives from a torch.nn conv, dropout or batch-norm class (timm's ScaledStdConv2d is
// a conv); in TorchScript, where classes are flattened, a module whose own forward calls a
// convolution, dropout or batch-norm op. Without that fact, the torch.nn class names decide.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace reprocheck {

enum class LayerCategory { conv, dropout, batchnorm, linear, norm };

const char* to_string(LayerCategory c);
// "conv", "dropout", "batchnorm" (or "bn"), "linear", "norm"; case-insensitive.
std::optional<LayerCategory> parse_layer_category(const std::string& word);

// The category of a module type given as its qualified name ("torch.nn.modules.conv.Conv2d");
// nullopt for types outside torch.nn or outside every category.
std::optional<LayerCategory> layer_category(const std::string& qualified_type);

// The category an ATen op makes its module ("conv2d", "aten::batch_norm" -> conv, batchnorm).
std::optional<LayerCategory> op_category(const std::string& op);
// Of the ops a module's own forward calls: the category they make it, conv before batch norm
// before dropout before linear before norm (a weight-standardized conv also calls batch_norm).
std::optional<LayerCategory> category_of_ops(const std::vector<std::string>& ops);

// Categories by qualified type, as the front end found them (the dump's `layer_categories`
// attribute); types it does not list fall back to layer_category().
class LayerCategories {
 public:
  LayerCategories() = default;
  // From the JSON object {"type": "conv", ...}; text that does not parse gives an empty map.
  static LayerCategories from_json(const std::string& json);
  std::string to_json() const;
  void set(const std::string& type, LayerCategory c) { by_type_[type] = c; }
  std::optional<LayerCategory> of(const std::string& type) const;
  bool is(const std::string& type, LayerCategory c) const { return of(type) == c; }

 private:
  std::map<std::string, LayerCategory> by_type_;
};

inline bool is_category(const std::string& qualified_type, LayerCategory c) {
  return layer_category(qualified_type) == c;
}

// A module of a model, root first (path ""), for layer selection.
struct LayerRef {
  std::string path;                                      // "layer1.0.conv1"
  std::string type;                                      // qualified type, "torch.nn.modules.conv.Conv2d"
  std::optional<LayerCategory> category = std::nullopt;  // what it is, from the front end
  bool leaf_with_params = false;                         // no submodules, and parameters of its own
};

// Which modules a --layers spec selects: a comma list of "default" (conv, dropout and batch norm),
// "all", "none", categories, class names (ReLU, BasicBlock) and "path:REGEX" (the rest of the
// spec); the words combine ("default,BatchNormAct2d" is both). The root is never selected by kind;
// "path:^$" selects it. Throws UsageError for a bad regular expression, and for a word that is
// none of these and no class of the model (naming the choices).
std::vector<bool> select_layers(const std::string& spec, const std::vector<LayerRef>& modules);

// A note when the default selection taps almost nothing of a model that has many leaf layers
// with parameters (its layers are classes of its own); "" otherwise.
std::string sparse_selection_note(const std::string& spec, const std::vector<LayerRef>& modules,
                                  const std::vector<bool>& selected);

// Help text for --layers.
std::string layer_selection_help();

}  // namespace reprocheck
