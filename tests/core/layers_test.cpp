#include "reprocheck/layers.h"

#include <gtest/gtest.h>

#include "reprocheck/error.h"

namespace rc = reprocheck;

namespace {

const std::vector<rc::LayerRef> kModel = {
    {"", "__main__.Net"},
    {"features.0", "torch.nn.modules.conv.Conv2d"},
    {"features.1", "torch.nn.modules.batchnorm.BatchNorm2d"},
    {"features.2", "torch.nn.modules.activation.ReLU"},
    {"block", "__main__.ConvBlock"},
    {"block.conv", "torch.nn.modules.conv.Conv1d"},
    {"drop", "torch.nn.modules.dropout.Dropout"},
    {"head", "torch.nn.modules.linear.Linear"},
    {"norm", "torch.nn.modules.normalization.LayerNorm"},
};

std::vector<std::string> selected(const std::string& spec) {
  auto sel = rc::select_layers(spec, kModel);
  std::vector<std::string> out;
  for (size_t i = 0; i < sel.size(); ++i)
    if (sel[i]) out.push_back(kModel[i].path);
  return out;
}

}  // namespace

TEST(Layers, CategoriesAreTorchNnTypesOnly) {
  EXPECT_EQ(rc::layer_category("torch.nn.modules.conv.Conv2d"), rc::LayerCategory::conv);
  EXPECT_EQ(rc::layer_category("torch.nn.modules.dropout.AlphaDropout"), rc::LayerCategory::dropout);
  EXPECT_EQ(rc::layer_category("torch.nn.modules.batchnorm.SyncBatchNorm"), rc::LayerCategory::batchnorm);
  // A user's class whose name looks like a conv is not one: capture and hints agree on this.
  EXPECT_EQ(rc::layer_category("__main__.ConvBlock"), std::nullopt);
  EXPECT_EQ(rc::layer_category("mylib.Conv2d"), std::nullopt);
  EXPECT_EQ(rc::layer_category("aten::conv2d"), std::nullopt);
  EXPECT_EQ(rc::parse_layer_category("BN"), rc::LayerCategory::batchnorm);
  EXPECT_EQ(rc::parse_layer_category("relu"), std::nullopt);
}

TEST(Layers, SelectionByCategoryClassAndPath) {
  EXPECT_EQ(selected("default"), (std::vector<std::string>{"features.0", "features.1", "block.conv", "drop"}));
  EXPECT_EQ(selected("none"), std::vector<std::string>{});
  EXPECT_EQ(selected("all").size(), kModel.size() - 1);  // never the root by kind
  EXPECT_EQ(selected("linear,norm"), (std::vector<std::string>{"head", "norm"}));
  EXPECT_EQ(selected("ReLU,convblock"), (std::vector<std::string>{"features.2", "block"}));
  EXPECT_EQ(selected("path:^features\\.[01]$"), (std::vector<std::string>{"features.0", "features.1"}));
  EXPECT_EQ(selected("dropout,path:^$"), (std::vector<std::string>{"", "drop"}));  // a regex takes the rest
  EXPECT_THROW(rc::select_layers("path:([", kModel), rc::UsageError);
}
