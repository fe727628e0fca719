// Sum reductions on the CPU over contiguous data, accumulated in double.
//
// Every reduction is one of three forms of a contiguous x:
//   sum_rows  x (rows, cols) -> out (rows): each row summed
//   sum_cols  x (rows, cols) -> out (cols): each column summed (a bias grad)
//   sum_mid   x (outer, red, inner) -> out (outer, inner): the middle axis
// Results are the same on every run with the same thread count: threads sum
// fixed chunks and the partial sums are added in chunk order.
#pragma once

#include <cstdint>

namespace kbit::cpu {

template <typename T>
void sum_rows(int64_t rows, int64_t cols, const T* x, T* out);
template <typename T>
void sum_cols(int64_t rows, int64_t cols, const T* x, T* out);
template <typename T>
void sum_mid(int64_t outer, int64_t red, int64_t inner, const T* x, T* out);

}  // namespace kbit::cpu
