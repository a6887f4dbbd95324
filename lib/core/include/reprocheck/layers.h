// Layer categories (conv, dropout, batch norm, ...): which module types belong to each. One
// definition, used by capture (--layers) and by the cause hints, so that both agree on what a
// conv is: a torch.nn module of one of the category's types, not any class whose name looks alike.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace reprocheck {

enum class LayerCategory { conv, dropout, batchnorm, linear, norm };

// "conv", "dropout", "batchnorm" (or "bn"), "linear", "norm"; case-insensitive.
std::optional<LayerCategory> parse_layer_category(const std::string& word);

// The category of a module type given as its qualified name ("torch.nn.modules.conv.Conv2d");
// nullopt for types outside torch.nn or outside every category.
std::optional<LayerCategory> layer_category(const std::string& qualified_type);

inline bool is_category(const std::string& qualified_type, LayerCategory c) {
  return layer_category(qualified_type) == c;
}

// A module of a model, root first (path ""), for layer selection.
struct LayerRef {
  std::string path;  // "layer1.0.conv1"
  std::string type;  // qualified type, "torch.nn.modules.conv.Conv2d"
};

// Which modules a --layers spec selects: "default", "all", "none", a comma list of categories or
// class names (ReLU, BasicBlock), or "path:REGEX" (the rest of the spec). The root is never
// selected by kind; "path:^$" selects it. Throws UsageError for a bad regular expression.
std::vector<bool> select_layers(const std::string& spec, const std::vector<LayerRef>& modules);

// Help text for --layers.
std::string layer_selection_help();

}  // namespace reprocheck
