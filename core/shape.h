// Shapes and strides (in elements, row-major by default).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

namespace kbit {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// "(4, 8)"
std::string shape_str(const Shape& shape);
// Maps a possibly negative axis into [0, ndim); throws naming `op`.
int normalize_axis(int axis, int ndim, const char* op);
// The broadcast of two shapes (numpy rules); throws naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace kbit
