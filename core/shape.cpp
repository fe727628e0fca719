#include "core/shape.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"

namespace kbit {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ", ";
    os << shape[i];
  }
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int normalize_axis(int axis, int ndim, const char* op) {
  int a = axis < 0 ? axis + ndim : axis;
  KBIT_CHECK(a >= 0 && a < ndim, "[", op, "] expected an axis in [", -ndim,
             ", ", ndim, "), got ", axis);
  return a;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KBIT_CHECK(da == db || da == 1 || db == 1, "[", op,
               "] expected broadcastable shapes, got ", shape_str(a), " and ",
               shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace kbit
