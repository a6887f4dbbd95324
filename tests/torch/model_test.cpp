#include "reprocheck/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "reprocheck/error.h"

namespace rc = reprocheck;

namespace {

std::string fixture(const std::string& name) { return std::string(REPROCHECK_FIXTURE_DIR) + "/" + name; }

const rc::ModuleInfo* find(const rc::ModelSummary& s, const std::string& path) {
  for (const auto& m : s.modules)
    if (m.path == path) return &m;
  return nullptr;
}

// The InputError message for loading `path`, or "" when it loads.
std::string load_error(const std::string& path) {
  try {
    rc::inspect_model(path);
  } catch (const rc::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Model, DemanglesTorchScriptTypeNames) {
  EXPECT_EQ(rc::demangle_type_name("__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d"),
            "torch.nn.modules.conv.Conv2d");
  EXPECT_EQ(rc::demangle_type_name("__torch__.BasicBlock"), "BasicBlock");
  EXPECT_EQ(rc::demangle_type_name("__torch__.resnet_mini.___torch_mangle_12.BasicBlock"), "resnet_mini.BasicBlock");
}

class EveryFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(EveryFixture, LoadsWithItsEmbeddedInputShape) {
  auto s = rc::inspect_model(fixture(std::string(GetParam()) + ".pt"));
  ASSERT_FALSE(s.modules.empty());
  EXPECT_EQ(s.modules.front().path, "");
  ASSERT_TRUE(s.meta.input_shape.has_value());
  EXPECT_GE(s.meta.input_shape->size(), 2u);
  EXPECT_GT(s.total_params, 0);
  EXPECT_EQ(s.signature.size(), 16u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EveryFixture,
                         ::testing::Values("seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet"));

TEST(Model, ListsSeedConvnetPathsTypesAndParameters) {
  auto s = rc::inspect_model(fixture("seed_convnet.pt"));
  const auto* conv = find(s, "features.0");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->type, "torch.nn.modules.conv.Conv2d");
  EXPECT_EQ(conv->kind, "Conv2d");
  EXPECT_EQ(conv->params, 16 * 3 * 3 * 3 + 16);
  const auto* conv2 = find(s, "features.3");
  ASSERT_NE(conv2, nullptr);
  EXPECT_EQ(conv2->params, 32 * 16 * 3 * 3 + 32);
  EXPECT_EQ(find(s, "features.2")->kind, "MaxPool2d");
  EXPECT_EQ(find(s, "head.1")->kind, "Linear");
  EXPECT_EQ(s.modules.front().params, s.total_params);
  EXPECT_EQ(s.total_params, 448 + 4640 + (2048 * 64 + 64) + (64 * 10 + 10));
  // The two Conv2d differ in shape, so TorchScript gives them distinct (mangled) types.
  EXPECT_EQ(s.meta.loss.value_or(""), "cross_entropy");
}

TEST(Model, ResnetInstancesShareTypesAndKeepTheirOwnPaths) {
  auto s = rc::inspect_model(fixture("resnet_mini.pt"));
  for (const char* p : {"layer1.0", "layer1.1"}) {
    const auto* block = find(s, p);
    ASSERT_NE(block, nullptr) << p;
    EXPECT_EQ(block->kind, "BasicBlock");
    EXPECT_TRUE(block->shares_type) << p;
  }
  const auto* a = find(s, "layer1.0.conv1");
  const auto* b = find(s, "layer1.1.conv1");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->type, b->type);
  EXPECT_EQ(find(s, "layer1.0.relu")->kind, "ReLU");
  EXPECT_EQ(find(s, "layer2.0.downsample.1")->kind, "BatchNorm2d");
  EXPECT_EQ(find(s, "head.1")->kind, "Dropout");
  EXPECT_EQ(find(s, "conv1")->own_params, 16 * 3 * 3 * 3);
  EXPECT_EQ(find(s, "layer1")->own_params, 0);
  EXPECT_GT(find(s, "layer1")->params, 0);
}

TEST(Model, TracedModelKeepsItsSubmodules) {
  auto s = rc::inspect_model(fixture("traced_convnet.pt"));
  ASSERT_NE(find(s, "conv"), nullptr);
  EXPECT_EQ(find(s, "conv")->kind, "Conv2d");
  EXPECT_EQ(find(s, "bn")->kind, "BatchNorm2d");
}

TEST(Model, SignatureIgnoresWeightsButNotArchitecture) {
  auto a = rc::inspect_model(fixture("seed_convnet.pt"));
  auto b = rc::inspect_model(fixture("frozen_convnet.pt"));  // same model, different structure once frozen
  auto c = rc::inspect_model(fixture("seed_convnet.pt"));
  EXPECT_EQ(a.signature, c.signature);
  EXPECT_NE(a.signature, b.signature);
}

TEST(ModelErrors, MissingFile) { EXPECT_NE(load_error(fixture("nope.pt")).find("no such file"), std::string::npos); }

TEST(ModelErrors, Directory) { EXPECT_NE(load_error(fixture("broken")).find("is a directory"), std::string::npos); }

TEST(ModelErrors, EmptyFile) { EXPECT_NE(load_error(fixture("broken/empty.pt")).find("is empty"), std::string::npos); }

TEST(ModelErrors, TextFile) {
  auto e = load_error(fixture("broken/text.pt"));
  EXPECT_NE(e.find("not a TorchScript archive"), std::string::npos) << e;
  EXPECT_NE(e.find("torch.jit.script"), std::string::npos) << e;
}

TEST(ModelErrors, StateDictCheckpointIsNamedAsSuch) {
  auto e = load_error(fixture("broken/state_dict.pt"));
  EXPECT_NE(e.find("torch.save checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find("torch.jit.script(model).save"), std::string::npos) << e;
  EXPECT_NE(e.find("broken/state_dict.pt"), std::string::npos) << e;
}

TEST(ModelErrors, PickledModuleIsNamedAsCheckpoint) {
  EXPECT_NE(load_error(fixture("broken/pickled_module.pt")).find("torch.save checkpoint"), std::string::npos);
}

TEST(ModelErrors, LegacyPickleCheckpoint) {
  EXPECT_NE(load_error(fixture("broken/legacy_checkpoint.pt")).find("legacy pickle format"), std::string::npos);
}

TEST(ModelErrors, TruncatedArchive) {
  auto e = load_error(fixture("broken/truncated.pt"));
  EXPECT_NE(e.find("truncated or corrupt"), std::string::npos) << e;
}

TEST(ModelErrors, MessagesAreOneLine) {
  for (const char* f : {"broken/empty.pt", "broken/text.pt", "broken/state_dict.pt", "broken/truncated.pt"}) {
    auto e = load_error(fixture(f));
    ASSERT_FALSE(e.empty()) << f;
    EXPECT_EQ(e.find('\n'), std::string::npos) << f << ": " << e;
  }
}

TEST(ModelErrors, MissingLibrary) {
  try {
    rc::load_library("/nonexistent/libops.so");
    FAIL() << "no error";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libops.so"), std::string::npos);
  }
}
