// Hostile and damaged dumps: every reader of a dump validates what it reads, and a damaged dump is
// an input error naming the file and the tensor, never a crash and never a verdict.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "reprocheck/compare.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/report.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

void write_dump(const std::string& path, const std::string& layer = "conv1", std::vector<float> data = {1, 2, 3, 4},
                const std::string& layer_type = "torch.nn.modules.conv.Conv2d") {
  rc::DumpWriter w(path, true);
  w.set_attribute("model", std::string("m.pt"));
  w.set_attribute("model_signature", std::string("sig"));
  rc::TensorMeta m;
  m.step = 0;
  m.phase = rc::Phase::forward;
  m.kind = rc::Kind::activation;
  m.layer = layer;
  m.layer_type = layer_type;
  m.name = "out";
  m.dtype = "float32";
  m.shape = {static_cast<int64_t>(data.size())};
  w.write(m, data.data(), data.size() * 4);
  w.commit();
}

// Runs `edit` on the dump opened read-write with HDF5 directly.
template <typename F>
void edit(const std::string& path, F edit) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  edit(f);
  H5Fclose(f);
}

void replace_dataset(hid_t f, const char* name, hid_t type, std::vector<hsize_t> dims, const void* data) {
  H5Ldelete(f, name, H5P_DEFAULT);
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t ds = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(ds);
  H5Sclose(space);
}

std::string diff_error(const std::string& a, const std::string& b) {
  try {
    rc::compare_dumps({a, b});
  } catch (const rc::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Hostile, DamagedDataWithItsHashKeptIsAnErrorNotAMatch) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  write_dump(d.file("b.h5"));
  edit(d.file("b.h5"), [](hid_t f) {
    float other[4] = {1, 2, 3, 5};
    replace_dataset(f, "tensors/000000", H5T_IEEE_F32LE, {4}, other);
  });
  auto e = diff_error(d.file("a.h5"), d.file("b.h5"));
  EXPECT_NE(e.find("is damaged: tensor 'conv1' (tensors/000000) does not match its stored hash"), std::string::npos)
      << e;
  EXPECT_NE(e.find(d.file("b.h5")), std::string::npos) << e;
}

TEST(Hostile, AMissingDatasetIsAnError) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  write_dump(d.file("b.h5"));
  edit(d.file("b.h5"), [](hid_t f) { H5Ldelete(f, "tensors/000000", H5P_DEFAULT); });
  EXPECT_NE(diff_error(d.file("a.h5"), d.file("b.h5")).find("is missing"), std::string::npos);
}

TEST(Hostile, ADatasetLargerThanItsIndexRowIsAnError) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  write_dump(d.file("b.h5"));
  edit(d.file("b.h5"), [](hid_t f) {
    std::vector<float> big(1 << 16, 1.0f);
    replace_dataset(f, "tensors/000000", H5T_IEEE_F32LE, {big.size()}, big.data());
  });
  EXPECT_NE(diff_error(d.file("a.h5"), d.file("b.h5")).find("has another shape than its index row"), std::string::npos);
}

TEST(Hostile, DataOfAnotherDtypeOrByteOrderIsAnError) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  for (hid_t type : {H5T_IEEE_F64LE, H5T_IEEE_F32BE, H5T_STD_I32LE}) {
    write_dump(d.file("b.h5"));
    edit(d.file("b.h5"), [&](hid_t f) {
      double data[4] = {1, 2, 3, 4};
      hid_t mem = H5Tget_size(type) == 8 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
      float fdata[4] = {1, 2, 3, 4};
      if (H5Tget_class(type) == H5T_INTEGER) {
        int32_t idata[4] = {1, 2, 3, 4};
        replace_dataset(f, "tensors/000000", type, {4}, idata);
        return;
      }
      (void)mem;
      replace_dataset(f, "tensors/000000", type, {4}, H5Tget_size(type) == 8 ? static_cast<void*>(data) : fdata);
    });
    EXPECT_NE(diff_error(d.file("a.h5"), d.file("b.h5")).find("is not stored as float32"), std::string::npos);
  }
}

TEST(Hostile, AttributesOfTheWrongShapeOrTypeAreIgnoredOrRefused) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  write_dump(d.file("b.h5"));
  edit(d.file("b.h5"), [](hid_t f) {
    // An integer array where a string is expected, and a huge one.
    H5Adelete(f, "model");
    hsize_t n = 100000;
    std::vector<int64_t> values(n, 7);
    hid_t space = H5Screate_simple(1, &n, nullptr);
    hid_t a = H5Acreate2(f, "model", H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, values.data());
    H5Aclose(a);
    H5Sclose(space);
  });
  {
    rc::DumpReader r(d.file("b.h5"));
    EXPECT_EQ(r.attribute("model", "absent"), "absent");
  }
  EXPECT_FALSE(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}).divergent());

  edit(d.file("b.h5"), [](hid_t f) {
    H5Adelete(f, "format_version");
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "format_version", str, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, str, "1");  // the right digits, as text: not what the format stores
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(str);
  });
  EXPECT_NE(diff_error(d.file("a.h5"), d.file("b.h5")).find("its attribute 'format_version' is text"),
            std::string::npos)
      << diff_error(d.file("a.h5"), d.file("b.h5"));
}

TEST(Hostile, DeeplyNestedRunOptionsAreRefusedWithoutRecursion) {
  testutil::TempDir d;
  write_dump(d.file("a.h5"));
  write_dump(d.file("b.h5"));
  std::string nested(100000, '[');
  nested += std::string(100000, ']');
  {
    // Written through the writer's own attribute call on a fresh copy.
    rc::DumpWriter w(d.file("c.h5"), true);
    w.set_attribute("model", std::string("m.pt"));
    w.set_attribute("model_signature", std::string("sig"));
    w.set_attribute("run_options", nested);
    w.set_attribute("replica_notes", nested);
    w.commit();
  }
  EXPECT_THROW(rc::from_json(nested), rc::InputError);
  auto c = rc::compare_dumps({d.file("c.h5"), d.file("c.h5")});  // no crash: the options are ignored
  EXPECT_FALSE(c.divergent());
}

TEST(Hostile, SpecialFilesAreRefusedAtOnce) {
  testutil::TempDir d;
  ASSERT_EQ(mkfifo(d.file("fifo.h5").c_str(), 0600), 0);
  auto start = std::chrono::steady_clock::now();
  try {
    rc::DumpReader r(d.file("fifo.h5"));
    FAIL() << "a FIFO was read";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos);
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
}

TEST(Hostile, NamesFromFilesAreDataInEveryReport) {
  testutil::TempDir d;
  const std::string evil = "x\x1b[2J<script>alert(1)</script>](http://e.x)\n# head \xff\xfe";
  write_dump(d.file("a.h5"), evil, {1, 2, 3, 4}, evil);
  write_dump(d.file("b.h5"), evil, {1, 2, 3, 5}, evil);
  auto report = rc::make_report(rc::compare_dumps({d.file("a.h5"), d.file("b.h5")}));
  std::string text = rc::render_text(report);
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_NE(text.find("x\\x1b[2J"), std::string::npos) << text;
  std::string md = rc::render_markdown(report);
  EXPECT_EQ(md.find("<script>"), std::string::npos) << md;
  EXPECT_NE(md.find("\\](http"), std::string::npos) << md;  // the bracket is escaped: no link
  EXPECT_EQ(md.find(" ](http"), std::string::npos) << md;
  EXPECT_EQ(md.find("\n# head"), std::string::npos) << md;
  auto json = nlohmann::json::parse(rc::render_json(report));  // valid: no raw control bytes, valid UTF-8
  EXPECT_EQ(json["first_divergence"]["layer"].get<std::string>().find('\x1b'), std::string::npos);
  std::string junit = rc::render_junit(report);
  EXPECT_EQ(junit.find('\xff'), std::string::npos);
  EXPECT_EQ(junit.find("<script>"), std::string::npos);
}

TEST(Hostile, SanitizeKeepsValidUtf8) {
  EXPECT_EQ(rc::sanitize_text("conv · ü 日本"), "conv · ü 日本");
  EXPECT_EQ(rc::sanitize_text("a\x01"
                              "b"),
            "a\\x01b");
  EXPECT_EQ(rc::sanitize_text("\xc0\xaf"), "\\xc0\\xaf");           // an overlong slash
  EXPECT_EQ(rc::sanitize_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
}

TEST(Hostile, AFileThatCrashesHdf5IsAnInputError) {
  // A bit flip in the index's string heap reference (found by ci/fuzz) makes HDF5 itself read
  // out of bounds: the dump is checked in a child process first.
  const std::string path = std::string(REPROCHECK_FUZZ_CORPUS) + "/index_heap_bitflip.h5";
  try {
    rc::compare_dumps({path, path});
    FAIL() << "a damaged dump compared";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is damaged"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}
