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
  // Words combine: default and a class.
  EXPECT_EQ(selected("default,Linear"),
            (std::vector<std::string>{"features.0", "features.1", "block.conv", "drop", "head"}));
  EXPECT_EQ(selected("path:^features\\.[01]$"), (std::vector<std::string>{"features.0", "features.1"}));
  EXPECT_EQ(selected("dropout,path:^$"), (std::vector<std::string>{"", "drop"}));  // a regex takes the rest
  EXPECT_THROW(rc::select_layers("path:([", kModel), rc::UsageError);
}

TEST(Layers, AnUnknownSelectorIsAnErrorNamingTheChoices) {
  try {
    rc::select_layers("default,Lineer", kModel);
    FAIL();
  } catch (const rc::UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unknown --layers selector 'Lineer'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("default, all, none, conv, dropout, batchnorm, linear, norm, path:REGEX"), std::string::npos);
    EXPECT_NE(msg.find("ConvBlock, Dropout, LayerNorm, Linear, ReLU"), std::string::npos) << msg;
  }
}

TEST(Layers, ALayerIsWhatItsFrontEndSaysItIs) {
  // Subclasses of torch.nn classes (timm's), known by ancestry (Python) or by their ops (TorchScript).
  std::vector<rc::LayerRef> model = {{"", "timm.models.nfnet.NormFreeNet"},
                                     {"stem", "timm.layers.std_conv.ScaledStdConv2d", rc::LayerCategory::conv, true},
                                     {"bn", "timm.layers.norm_act.BatchNormAct2d", rc::LayerCategory::batchnorm, true},
                                     {"act", "torch.nn.modules.activation.GELU"}};
  auto sel = rc::select_layers("default", model);
  EXPECT_EQ(sel, (std::vector<bool>{false, true, true, false}));
  // Ops decide in TorchScript, conv before batch norm: a weight-standardized conv calls both.
  EXPECT_EQ(rc::category_of_ops({"batch_norm", "reshape", "conv2d"}), rc::LayerCategory::conv);
  EXPECT_EQ(rc::category_of_ops({"batch_norm", "relu"}), rc::LayerCategory::batchnorm);
  EXPECT_EQ(rc::category_of_ops({"aten::dropout"}), rc::LayerCategory::dropout);
  EXPECT_EQ(rc::category_of_ops({"relu", "add"}), std::nullopt);
  auto cats = rc::LayerCategories::from_json(R"({"a.B": "conv", "c.D": "nonsense"})");
  EXPECT_EQ(cats.of("a.B"), rc::LayerCategory::conv);
  EXPECT_EQ(cats.of("c.D"), std::nullopt);
  EXPECT_EQ(cats.of("torch.nn.modules.dropout.Dropout"), rc::LayerCategory::dropout);  // falls back to torch.nn
  EXPECT_EQ(rc::LayerCategories::from_json("{not json").of("a.B"), std::nullopt);
}

TEST(Layers, ADefaultSelectionThatTapsAlmostNothingGetsANote) {
  std::vector<rc::LayerRef> model = {{"", "m.Net"}, {"drop", "torch.nn.modules.dropout.Dropout", std::nullopt, false}};
  for (int i = 0; i < 8; ++i)
    model.push_back({"blocks." + std::to_string(i), "timm.layers.std_conv.StdConv2d", std::nullopt, true});
  auto sel = rc::select_layers("default", model);
  auto note = rc::sparse_selection_note("default", model, sel);
  EXPECT_NE(note.find("tapped 1 layer(s), while the model has 8 leaf layers"), std::string::npos) << note;
  EXPECT_NE(note.find("--layers default,StdConv2d"), std::string::npos) << note;
  EXPECT_EQ(rc::sparse_selection_note("all", model, rc::select_layers("all", model)), "");
  model.resize(5);  // few leaf layers: nothing to say
  EXPECT_EQ(rc::sparse_selection_note("default", model, rc::select_layers("default", model)), "");
}
