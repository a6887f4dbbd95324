#include "reprocheck/dtype.h"

#include <fmt/format.h>

#include "reprocheck/error.h"

namespace reprocheck {

namespace {

constexpr DTypeInfo kTable[] = {
    {DType::float32, "float32", 4, true},   {DType::float64, "float64", 8, true}, {DType::float16, "float16", 2, true},
    {DType::bfloat16, "bfloat16", 2, true}, {DType::int8, "int8", 1, false},      {DType::uint8, "uint8", 1, false},
    {DType::int16, "int16", 2, false},      {DType::int32, "int32", 4, false},    {DType::int64, "int64", 8, false},
    {DType::bool_, "bool", 1, false},
};

}  // namespace

const DTypeInfo* dtype_table(size_t* count) {
  *count = std::size(kTable);
  return kTable;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& d : kTable)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

const DTypeInfo& dtype_info(DType d) { return kTable[static_cast<size_t>(d)]; }

std::string dtype_list(bool floating_only) {
  std::string out;
  for (const auto& d : kTable) {
    if (floating_only && !d.floating) continue;
    if (!out.empty()) out += ", ";
    out += d.name;
  }
  return out;
}

DType dtype_from_name(const std::string& name) {
  if (auto d = parse_dtype(name)) return *d;
  throw InputError(fmt::format(
      "unsupported tensor dtype '{}': reprocheck stores {}; convert the tensor or skip its layer", name, dtype_list()));
}

size_t dtype_size(const std::string& name) { return dtype_info(dtype_from_name(name)).size; }

}  // namespace reprocheck
