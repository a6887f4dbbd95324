#include "reprocheck/dump.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "reprocheck/error.h"
#include "test_util.h"

namespace rc = reprocheck;

namespace {

rc::TensorMeta meta(const std::string& layer, const std::string& dtype, std::vector<int64_t> shape) {
  rc::TensorMeta m;
  m.step = 0;
  m.phase = rc::Phase::forward;
  m.layer = layer;
  m.layer_type = "torch.nn.modules.conv.Conv2d";
  m.kind = rc::Kind::activation;
  m.name = "out";
  m.dtype = dtype;
  m.shape = std::move(shape);
  return m;
}

}  // namespace

TEST(Dump, RoundTripsEveryDtypeWithItsIndex) {
  testutil::TempDir dir;
  std::string path = dir.file("run.h5");
  std::vector<float> f32 = {1.5f, -0.0f, 3.25f, 1e-30f, -7.f, 8.f};
  std::vector<double> f64 = {1.0 / 3.0, -2.0};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};   // 1.0, -2.0
  std::vector<uint16_t> bf16 = {0x3f80, 0x4049};  // 1.0, 3.140625
  std::vector<int64_t> i64 = {1, -2, 1LL << 40};
  std::vector<uint8_t> b = {1, 0, 1};
  std::vector<int32_t> i32 = {7};
  {
    rc::DumpWriter w(path, false);
    w.set_attribute("seed", int64_t{42});
    w.set_attribute("device", std::string("cpu"));
    w.write(meta("a", "float32", {2, 3}), f32.data(), f32.size() * 4);
    auto m = meta("b", "float64", {2});
    m.input_hash = 0x1234;
    m.has_input_hash = true;
    w.write(m, f64.data(), 16);
    w.write(meta("c", "float16", {2}), f16.data(), 4);
    w.write(meta("d", "bfloat16", {2}), bf16.data(), 4);
    w.write(meta("e", "int64", {3}), i64.data(), 24);
    w.write(meta("f", "bool", {3}), b.data(), 3);
    w.write(meta("g", "int32", {}), i32.data(), 4);     // a scalar
    w.write(meta("h", "float32", {0, 4}), nullptr, 0);  // no elements
    w.commit();
  }
  rc::DumpReader r(path);
  EXPECT_EQ(r.format_version(), rc::kDumpFormatVersion);
  EXPECT_EQ(r.attribute("seed"), "42");
  EXPECT_EQ(r.attribute("device"), "cpu");
  ASSERT_EQ(r.index().size(), 8u);
  for (size_t i = 0; i < r.index().size(); ++i) EXPECT_EQ(r.index()[i].order, static_cast<int64_t>(i));
  const auto& a = r.index()[0];
  EXPECT_EQ(a.layer, "a");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.numel, 6);
  EXPECT_EQ(a.hash, rc::hash_bytes(f32.data(), 24));
  EXPECT_FALSE(a.has_input_hash);
  EXPECT_TRUE(r.index()[1].has_input_hash);
  EXPECT_EQ(r.index()[1].input_hash, 0x1234u);
  auto bytes = r.read(a);
  ASSERT_EQ(bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(bytes.data(), f32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(r.read(r.index()[2]).data(), f16.data(), 4), 0);
  EXPECT_EQ(std::memcmp(r.read(r.index()[3]).data(), bf16.data(), 4), 0);
  EXPECT_EQ(std::memcmp(r.read(r.index()[4]).data(), i64.data(), 24), 0);
  EXPECT_EQ(std::memcmp(r.read(r.index()[5]).data(), b.data(), 3), 0);
  EXPECT_EQ(r.index()[6].shape.size(), 0u);
  EXPECT_EQ(r.index()[6].numel, 1);
  EXPECT_EQ(r.index()[7].numel, 0);
  EXPECT_TRUE(r.read(r.index()[7]).empty());
}

TEST(Dump, NeverOverwritesWithoutBeingAsked) {
  testutil::TempDir dir;
  std::string path = dir.file("keep.h5");
  std::ofstream(path) << "precious";
  EXPECT_THROW(rc::DumpWriter(path, false), rc::InputError);
  std::ifstream in(path);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "precious");
  {
    rc::DumpWriter w(path, true);
    w.commit();
  }
  EXPECT_NO_THROW(rc::DumpReader{path});
}

TEST(Dump, AnUncommittedWriterLeavesNothingBehind) {
  testutil::TempDir dir;
  {
    rc::DumpWriter w(dir.file("run.h5"), false);
    float x = 1;
    w.write(meta("a", "float32", {1}), &x, 4);
    EXPECT_EQ(dir.entries(), 2u);  // the temporary file and the lock file
    EXPECT_FALSE(rc::files::exists(dir.file("run.h5")));
  }
  EXPECT_EQ(dir.entries(), 0u);
}

TEST(Dump, TwoWritersOfOneFileNeverReplaceEachOther) {
  testutil::TempDir dir;
  float x = 1;
  {
    rc::DumpWriter first(dir.file("run.h5"), false);
    try {
      rc::DumpWriter second(dir.file("run.h5"), false);
      FAIL() << "a second writer of the same file was let in";
    } catch (const rc::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("another process is writing it"), std::string::npos) << e.what();
    }
    first.write(meta("a", "float32", {1}), &x, 4);
    // A file that appears under the name meanwhile is kept, and this writer refuses to replace it.
    { std::ofstream(dir.file("run.h5")) << "someone else's"; }
    EXPECT_THROW(first.commit(), rc::InputError);
  }
  std::ifstream in(dir.file("run.h5"));
  std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, "someone else's");
  EXPECT_EQ(dir.entries(), 1u);
}

TEST(Dump, AStaleLockFromADeadWriterIsTakenOver) {
  testutil::TempDir dir;
  { std::ofstream(dir.file(".run.h5.lock")) << 2147483600; }  // no such process
  rc::DumpWriter w(dir.file("run.h5"), false);
  float x = 1;
  w.write(meta("a", "float32", {1}), &x, 4);
  w.commit();
  EXPECT_TRUE(rc::files::exists(dir.file("run.h5")));
  EXPECT_FALSE(rc::files::exists(dir.file(".run.h5.lock")));
}

TEST(Dump, RejectsWrongSizesAndUnknownDtypes) {
  testutil::TempDir dir;
  rc::DumpWriter w(dir.file("run.h5"), false);
  float x[2] = {};
  EXPECT_THROW(w.write(meta("a", "float32", {3}), x, 8), rc::RunError);
  EXPECT_THROW(w.write(meta("a", "complex64", {1}), x, 8), rc::InputError);
}

TEST(Dump, ReaderRefusesWhatIsNotADump) {
  testutil::TempDir dir;
  std::ofstream(dir.file("text.h5")) << "hello";
  EXPECT_THROW(rc::DumpReader(dir.file("text.h5")), rc::InputError);
  EXPECT_THROW(rc::DumpReader(dir.file("missing.h5")), rc::InputError);
  try {
    rc::DumpReader r(dir.file("missing.h5"));
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos);
  }
}

TEST(Dump, ReaderRefusesAnotherFormatVersion) {
  testutil::TempDir dir;
  std::string path = dir.file("v99.h5");
  {
    rc::DumpWriter w(path, false);
    w.set_attribute("format_version", int64_t{99});
    w.commit();
  }
  try {
    rc::DumpReader r(path);
    FAIL() << "read a version-99 dump";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("format version 99"), std::string::npos) << e.what();
  }
}

// hash_bytes may run a vectorized XXH3 (chosen at run time); every dump's hashes, goldens included,
// rely on it being XXH3-64 of the bytes, whatever the length, alignment and CPU.
TEST(Dump, HashBytesIsXxh3OfTheBytesAtEveryLengthAndAlignment) {
  EXPECT_EQ(rc::hash_bytes("", 0), 0x2D06800538D394C2ull);  // XXH3-64 of no bytes, seed 0
  std::mt19937 gen(7);
  std::vector<unsigned char> bytes((3 << 20) + 64);
  for (auto& b : bytes) b = static_cast<unsigned char>(gen());
  for (size_t len : {1, 3, 4, 8, 16, 17, 128, 129, 240, 241, 1023, 1024, 4096, 65537, 3 << 20})
    for (size_t offset : {0, 1, 8, 63}) {
      EXPECT_EQ(rc::hash_bytes(bytes.data() + offset, len), XXH3_64bits(bytes.data() + offset, len))
          << len << " bytes at offset " << offset;
    }
  testutil::TempDir dir;
  const std::string path = dir.file("blob");
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), 2500000);
  EXPECT_EQ(rc::hash_file(path), XXH3_64bits(bytes.data(), 2500000));  // streamed in 1 MiB blocks
}

TEST(Dump, HashSpansHashesEachSpanAsHashBytesOnTheThreadsItIsGiven) {
  std::vector<std::vector<unsigned char>> buffers;
  for (size_t n : {0, 1, 1000, 700000, 900000, 5}) buffers.emplace_back(n, static_cast<unsigned char>(n % 251));
  std::vector<std::pair<const void*, size_t>> spans;
  std::vector<uint64_t> expected;
  for (const auto& b : buffers) {
    spans.emplace_back(b.data(), b.size());
    expected.push_back(rc::hash_bytes(b.data(), b.size()));
  }
  for (size_t workers : {1, 2, 4}) EXPECT_EQ(rc::hash_spans(spans, workers), expected) << workers;
  size_t asked = 0;
  auto run = [&](size_t workers, const std::function<void()>& work) {
    asked = workers;
    std::thread other(work);
    work();
    other.join();
  };
  EXPECT_EQ(rc::hash_spans(spans, 3, run), expected);
  EXPECT_EQ(asked, 3u);  // 1.6 MB in all: worth threads
  asked = 0;
  spans.resize(3);  // 1 KB in all: the calling thread alone
  expected.resize(3);
  EXPECT_EQ(rc::hash_spans(spans, 3, run), expected);
  EXPECT_EQ(asked, 0u);
}

TEST(Dump, MissingFolderIsAClearError) {
  try {
    rc::DumpWriter w("/nonexistent-folder/run.h5", false);
    FAIL();
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

TEST(Dump, AHashOnlyDumpKeepsTheIndexAndNoData) {
  testutil::TempDir dir;
  std::string path = dir.file("golden.h5");
  std::vector<float> big(1 << 16, 0.25f);
  uint64_t expected = rc::hash_bytes(big.data(), big.size() * sizeof(float));
  {
    rc::DumpWriter w(path, false, true);
    EXPECT_TRUE(w.hashes_only());
    for (int i = 0; i < 50; ++i)
      w.write(meta("conv" + std::to_string(i), "float32", {1 << 16}), big.data(), big.size() * 4);
    w.write_hash(meta("cuda", "float32", {3}), 42, true);
    EXPECT_EQ(w.bytes_written(), 0u);
    w.commit();
  }
  // 50 tensors of 256 KiB each: a full dump would hold 13 MB; the hash-only one stays small.
  EXPECT_LT(testutil::file_size(path), 64u * 1024);
  rc::DumpReader r(path);
  EXPECT_TRUE(r.hashes_only());
  EXPECT_EQ(r.attribute("capture"), "hashes");
  ASSERT_EQ(r.index().size(), 51u);
  EXPECT_EQ(r.index()[0].hash, expected);
  EXPECT_EQ(r.index()[0].numel, 1 << 16);
  EXPECT_EQ(r.index()[0].dataset, rc::kHashOnlyXxh3);
  EXPECT_FALSE(r.index()[0].has_data());
  EXPECT_EQ(r.index()[50].dataset, rc::kHashOnlyWords);
  EXPECT_EQ(r.index()[50].hash, 42u);
  EXPECT_NO_THROW(r.verify());
  std::vector<float> out(big.size());
  try {
    r.read_into(r.index()[0], out.data(), out.size() * 4);
    FAIL() << "read a hash-only row";
  } catch (const rc::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("records only the hash of tensor 'conv0'"), std::string::npos) << e.what();
  }
}

TEST(Dump, WriteHashNeedsAHashOnlyDump) {
  testutil::TempDir dir;
  rc::DumpWriter w(dir.file("full.h5"), false);
  EXPECT_THROW(w.write_hash(meta("x", "float32", {1}), 1, false), rc::RunError);
}

TEST(Dump, HashWordsIsTheDocumentedWordSum) {
  // Words 1, 2 and 3 (the last zero-padded): 1*1 + 2*(K+1) + 3*(2K+1) + 9 bytes, mod 2^64.
  const unsigned char bytes[9] = {1, 0, 0, 0, 2, 0, 0, 0, 3};
  const uint64_t k = 0x3C6EF372FE94F82AULL;
  EXPECT_EQ(rc::hash_words(bytes, 9), 1 + 2 * (k + 1) + 3 * (2 * k + 1) + 9);
  EXPECT_EQ(rc::hash_words(nullptr, 0), 0u);
  // Order matters: the same words elsewhere give another hash.
  const unsigned char swapped[9] = {2, 0, 0, 0, 1, 0, 0, 0, 3};
  EXPECT_NE(rc::hash_words(bytes, 9), rc::hash_words(swapped, 9));
  // A word of 0xffffffff is unsigned, not -1.
  const unsigned char high[4] = {0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(rc::hash_words(high, 4), 0xffffffffULL + 4);
}

TEST(Dump, AMergedDumpsRankLayerRoundTrips) {
  // The merge names rank 3's layers "rank3/..." (its model's own records "rank3"); pass 2's plan
  // names them as the rank wrote them.
  EXPECT_EQ(reprocheck::rank_layer(3, "layer1.conv"), "rank3/layer1.conv");
  EXPECT_EQ(reprocheck::rank_layer(3, ""), "rank3");
  for (const std::string layer : {"layer1.conv", "", "rank3x", "rank30/fc"}) {
    EXPECT_EQ(reprocheck::rank_of_layer(reprocheck::rank_layer(3, layer)), 3) << layer;
    EXPECT_EQ(reprocheck::layer_in_rank(3, reprocheck::rank_layer(3, layer)), layer) << layer;
  }
  EXPECT_EQ(reprocheck::layer_in_rank(3, "rank30/fc"), "rank30/fc");  // another rank's: unchanged
}
