// LibTorch's ScalarType for each dtype of dtype.h, and back. Not a public header.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>

#include "reprocheck/dtype.h"

namespace reprocheck::detail {

inline at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::float32:
      return at::kFloat;
    case DType::float64:
      return at::kDouble;
    case DType::float16:
      return at::kHalf;
    case DType::bfloat16:
      return at::kBFloat16;
    case DType::int8:
      return at::kChar;
    case DType::uint8:
      return at::kByte;
    case DType::int16:
      return at::kShort;
    case DType::int32:
      return at::kInt;
    case DType::int64:
      return at::kLong;
    case DType::bool_:
      return at::kBool;
  }
  return at::kFloat;
}

inline std::optional<DType> from_scalar_type(at::ScalarType t) {
  size_t n = 0;
  const DTypeInfo* table = dtype_table(&n);
  for (size_t i = 0; i < n; ++i)
    if (to_scalar_type(table[i].dtype) == t) return table[i].dtype;
  return std::nullopt;
}

// The dtype name a dump stores for `t`; LibTorch's own name for types a dump cannot store (the
// dump writer then refuses it with the list of supported ones).
inline std::string dtype_name_of(at::ScalarType t) {
  auto d = from_scalar_type(t);
  return d ? dtype_name(*d) : c10::toString(t);
}

}  // namespace reprocheck::detail
