#include "reprocheck/layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "reprocheck/error.h"
#include "reprocheck/run_options.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

namespace {

struct CategoryTypes {
  LayerCategory category;
  std::set<std::string> types;  // short names of torch.nn module classes
  std::set<std::string> ops;    // ATen ops (unqualified, without a trailing '_') that make a module one
};

// In order of precedence for category_of_ops.
const CategoryTypes kCategories[] = {
    {LayerCategory::conv,
     {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv1d", "LazyConv2d",
      "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d"},
     {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
      "_convolution", "cudnn_convolution", "mkldnn_convolution", "conv_tbc", "convolution_backward",
      "cudnn_convolution_backward"}},
    {LayerCategory::batchnorm,
     {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
      "LazyBatchNorm3d"},
     {"batch_norm", "native_batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm", "_native_batch_norm_legit",
      "native_batch_norm_backward", "cudnn_batch_norm_backward"}},
    {LayerCategory::dropout,
     {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"},
     {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout"}},
    {LayerCategory::linear, {"Linear", "Bilinear", "LazyLinear"}, {"linear", "bilinear"}},
    {LayerCategory::norm,
     {"LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm"},
     {"layer_norm", "group_norm", "instance_norm", "rms_norm", "native_layer_norm", "native_group_norm"}},
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The words of a spec; "path:REGEX" takes the rest (a regex may contain commas).
std::vector<std::string> spec_words(const std::string& spec) {
  std::vector<std::string> words;
  for (size_t start = 0; start <= spec.size();) {
    if (spec.compare(start, 5, "path:") == 0) {
      words.push_back(spec.substr(start));
      break;
    }
    size_t comma = std::min(spec.find(',', start), spec.size());
    if (comma > start) words.push_back(spec.substr(start, comma - start));
    start = comma + 1;
  }
  return words;
}

std::optional<LayerCategory> category_of(const LayerRef& m) { return m.category ? m.category : layer_category(m.type); }

std::string class_names(const std::vector<LayerRef>& modules) {
  std::set<std::string> names;
  for (size_t i = 1; i < modules.size(); ++i) names.insert(short_type_name(modules[i].type));
  std::vector<std::string> shown(names.begin(), names.end());
  const size_t total = shown.size();
  if (shown.size() > 12) shown.resize(12);
  return fmt::format("{}{}", fmt::join(shown, ", "), total > shown.size() ? ", ..." : "");
}

}  // namespace

const char* to_string(LayerCategory c) {
  switch (c) {
    case LayerCategory::conv:
      return "conv";
    case LayerCategory::dropout:
      return "dropout";
    case LayerCategory::batchnorm:
      return "batchnorm";
    case LayerCategory::linear:
      return "linear";
    case LayerCategory::norm:
      return "norm";
  }
  return "?";
}

std::optional<LayerCategory> parse_layer_category(const std::string& word) {
  std::string w = lower(word);
  if (w == "bn") return LayerCategory::batchnorm;
  for (const auto& c : kCategories)
    if (w == to_string(c.category)) return c.category;
  return std::nullopt;
}

std::optional<LayerCategory> layer_category(const std::string& qualified_type) {
  if (qualified_type.rfind("torch.nn.modules.", 0) != 0) return std::nullopt;
  const std::string kind = short_type_name(qualified_type);
  for (const auto& c : kCategories)
    if (c.types.count(kind)) return c.category;
  return std::nullopt;
}

std::optional<LayerCategory> op_category(const std::string& op) {
  std::string name = op.rfind("aten::", 0) == 0 ? op.substr(6) : op;
  if (name.size() > 1 && name.back() == '_') name.pop_back();
  for (const auto& c : kCategories)
    if (c.ops.count(name)) return c.category;
  return std::nullopt;
}

std::optional<LayerCategory> category_of_ops(const std::vector<std::string>& ops) {
  std::optional<LayerCategory> best;
  auto precedence = [](LayerCategory c) {
    for (size_t i = 0; i < std::size(kCategories); ++i)
      if (kCategories[i].category == c) return i;
    return std::size(kCategories);
  };
  for (const auto& op : ops)
    if (auto c = op_category(op); c && (!best || precedence(*c) < precedence(*best))) best = c;
  return best;
}

LayerCategories LayerCategories::from_json(const std::string& json) {
  LayerCategories out;
  if (json.empty() || !json_depth_within(json, kMaxJsonDepth)) return out;
  try {
    auto j = nlohmann::json::parse(json);
    if (!j.is_object()) return out;
    for (const auto& [type, word] : j.items())
      if (word.is_string())
        if (auto c = parse_layer_category(word.get<std::string>())) out.by_type_[sanitize_text(type)] = *c;
  } catch (const nlohmann::json::exception&) {
  }
  return out;
}

std::string LayerCategories::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [type, c] : by_type_) j[type] = to_string(c);
  return j.dump();
}

std::optional<LayerCategory> LayerCategories::of(const std::string& type) const {
  auto it = by_type_.find(type);
  return it != by_type_.end() ? std::optional<LayerCategory>(it->second) : layer_category(type);
}

std::vector<bool> select_layers(const std::string& spec, const std::vector<LayerRef>& modules) {
  std::vector<bool> selected(modules.size(), false);
  for (auto word : spec_words(spec)) {
    if (word == "none") continue;
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
    } else if (word == "default" || parse_layer_category(word)) {
      std::vector<LayerCategory> wanted;
      if (word == "default")
        wanted = {LayerCategory::conv, LayerCategory::dropout, LayerCategory::batchnorm};
      else
        wanted = {*parse_layer_category(word)};
      for (size_t i = 1; i < modules.size(); ++i)
        if (auto c = category_of(modules[i]); c && std::count(wanted.begin(), wanted.end(), *c)) selected[i] = true;
    } else {
      bool found = false;
      for (size_t i = 1; i < modules.size(); ++i)
        if (lower(short_type_name(modules[i].type)) == lower(word)) selected[i] = found = true;
      if (!found)
        throw UsageError(fmt::format(
            "unknown --layers selector '{}': it is no keyword and no class of the model; choose from default, "
            "all, none, conv, dropout, batchnorm, linear, norm, path:REGEX, or a class of the model ({})",
            sanitize_text(word), class_names(modules)));
    }
  }
  return selected;
}

std::string sparse_selection_note(const std::string& spec, const std::vector<LayerRef>& modules,
                                  const std::vector<bool>& selected) {
  if (spec != "default") return "";
  const auto tapped = std::count(selected.begin(), selected.end(), true);
  std::set<std::string> untapped_classes;
  int64_t leaves = 0;
  for (size_t i = 1; i < modules.size(); ++i) {
    if (!modules[i].leaf_with_params) continue;
    ++leaves;
    if (!selected[i]) untapped_classes.insert(short_type_name(modules[i].type));
  }
  if (tapped >= 3 || leaves < 6 || untapped_classes.empty()) return "";
  std::vector<std::string> names(untapped_classes.begin(), untapped_classes.end());
  if (names.size() > 3) names.resize(3);
  return fmt::format(
      "the default layer selection tapped {} layer(s), while the model has {} leaf layers with parameters of other "
      "classes ({}{}): their outputs are not compared one by one; pass --layers all, or name them: --layers "
      "default,{}",
      tapped, leaves, fmt::join(names, ", "), untapped_classes.size() > names.size() ? ", ..." : "", names.front());
}

std::string layer_selection_help() {
  return "default (conv, dropout, batchnorm), all, none, a comma list of kinds (conv, dropout, batchnorm, linear, "
         "norm, or a module class name such as ReLU or BasicBlock) and path:REGEX; words combine "
         "(default,BatchNormAct2d)";
}

}  // namespace reprocheck
