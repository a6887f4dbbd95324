#include "reprocheck/layers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <set>

#include "reprocheck/error.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

namespace {

struct CategoryTypes {
  LayerCategory category;
  std::set<std::string> types;  // short names of torch.nn module classes
};

const CategoryTypes kCategories[] = {
    {LayerCategory::conv,
     {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv1d",
      "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d"}},
    {LayerCategory::dropout,
     {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}},
    {LayerCategory::batchnorm,
     {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
      "LazyBatchNorm3d"}},
    {LayerCategory::linear, {"Linear", "Bilinear", "LazyLinear"}},
    {LayerCategory::norm,
     {"LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm",
      "RMSNorm"}},
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::optional<LayerCategory> parse_layer_category(const std::string& word) {
  std::string w = lower(word);
  if (w == "conv") return LayerCategory::conv;
  if (w == "dropout") return LayerCategory::dropout;
  if (w == "batchnorm" || w == "bn") return LayerCategory::batchnorm;
  if (w == "linear") return LayerCategory::linear;
  if (w == "norm") return LayerCategory::norm;
  return std::nullopt;
}

std::optional<LayerCategory> layer_category(const std::string& qualified_type) {
  if (qualified_type.rfind("torch.nn.modules.", 0) != 0) return std::nullopt;
  const std::string kind = short_type_name(qualified_type);
  for (const auto& c : kCategories)
    if (c.types.count(kind)) return c.category;
  return std::nullopt;
}

std::vector<bool> select_layers(const std::string& spec, const std::vector<LayerRef>& modules) {
  std::vector<bool> selected(modules.size(), false);
  if (spec == "none") return selected;
  std::vector<std::string> words;
  if (spec == "default") {
    words = {"conv", "dropout", "batchnorm"};
  } else {
    for (size_t start = 0; start <= spec.size();) {
      // path:REGEX takes the rest of the spec (a regex may contain commas).
      if (spec.compare(start, 5, "path:") == 0) {
        words.push_back(spec.substr(start));
        break;
      }
      size_t comma = std::min(spec.find(',', start), spec.size());
      if (comma > start) words.push_back(spec.substr(start, comma - start));
      start = comma + 1;
    }
  }
  for (const auto& word : words) {
    if (word == "all") {
      for (size_t i = 1; i < modules.size(); ++i) selected[i] = true;
    } else if (word.rfind("path:", 0) == 0) {
      std::regex re;
      try {
        re = std::regex(word.substr(5));
      } catch (const std::regex_error& e) {
        throw UsageError(fmt::format("bad regular expression '{}' in --layers: {}", word.substr(5), e.what()));
      }
      for (size_t i = 0; i < modules.size(); ++i)
        if (std::regex_search(modules[i].path, re)) selected[i] = true;
    } else if (auto category = parse_layer_category(word)) {
      for (size_t i = 1; i < modules.size(); ++i)
        if (layer_category(modules[i].type) == category) selected[i] = true;
    } else {
      for (size_t i = 1; i < modules.size(); ++i)
        if (lower(short_type_name(modules[i].type)) == lower(word)) selected[i] = true;
    }
  }
  return selected;
}

std::string layer_selection_help() {
  return "default (conv, dropout, batchnorm), all, none, a comma list of kinds (conv, dropout, batchnorm, linear, "
         "norm, or a module class name such as ReLU or BasicBlock), or path:REGEX";
}

}  // namespace reprocheck
