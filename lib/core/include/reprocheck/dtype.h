// The tensor dtypes a dump stores: the one table every part of reprocheck reads (names, sizes,
// float or integer). LibTorch's ScalarType mapping lives beside the recorder.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace reprocheck {

enum class DType { float32, float64, float16, bfloat16, int8, uint8, int16, int32, int64, bool_ };

struct DTypeInfo {
  DType dtype;
  const char* name;  // as in dumps, reports and flags: "float32", "bool"
  size_t size;       // bytes per element
  bool floating;
};

// Every dtype, in the order above.
const DTypeInfo* dtype_table(size_t* count);

std::optional<DType> parse_dtype(std::string_view name);
const DTypeInfo& dtype_info(DType d);
inline const char* dtype_name(DType d) { return dtype_info(d).name; }

// Bytes per element of a dtype named in a dump; throws InputError for an unknown name.
size_t dtype_size(const std::string& name);
// The dtype named `name`; throws InputError listing the supported ones.
DType dtype_from_name(const std::string& name);

// "float32, float64, ..." (only floating dtypes when `floating_only`).
std::string dtype_list(bool floating_only = false);

}  // namespace reprocheck
