#include "autograd/engine.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace kbit {
namespace {

thread_local bool t_grad_enabled = true;

// Below this many elements a sum stays on one thread (the fork would cost
// more); above it, gradient sums of activations (a residual stream's
// (B, T, C)) split across the OpenMP threads.
constexpr int64_t kParallelSum = int64_t(1) << 15;

// out = a + b elementwise, n elements; out may be a.
template <typename T>
void sum_loop(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for simd if (n >= kParallelSum) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// dst += src, same shape and dtype, dst contiguous.
void add_into(const Tensor& dst, const Tensor& src) {
  Tensor s = src.contiguous();
  dispatch_float(dst.dtype(), "backward", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    sum_loop(dst.data<T>(), s.data<T>(), dst.data<T>(), dst.numel());
  });
}

// A new tensor a + b (tag grad): one pass, where a copy of a followed by
// add_into would make two.
Tensor sum_of(const Tensor& a, const Tensor& b) {
  Tensor ac = a.contiguous(), bc = b.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), MemTag::grad);
  dispatch_float(a.dtype(), "backward", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    sum_loop(ac.data<T>(), bc.data<T>(), out.data<T>(), out.numel());
  });
  return out;
}

Tensor owned_copy(const Tensor& g, MemTag tag) {
  return g.clone(tag);
}

void check_grad(const Tensor& t, const Tensor& g, const char* op) {
  KBIT_CHECK(g.shape() == t.shape(), "[backward] ", op,
             " returned a gradient of shape ", shape_str(g.shape()),
             " for an input of shape ", shape_str(t.shape()));
  KBIT_CHECK(g.dtype() == t.dtype(), "[backward] ", op,
             " returned a gradient of dtype ", dtype_name(g.dtype()),
             " for an input of dtype ", dtype_name(t.dtype()));
}

}  // namespace

bool grad_enabled() {
  return t_grad_enabled;
}

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) {
  t_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  t_grad_enabled = previous_;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

Tensor record(Tensor out, const char* name, std::vector<Tensor> inputs,
              BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
  return out;
}

void backward(const Tensor& root, const Tensor& grad) {
  KBIT_CHECK(root.requires_grad(),
             "[backward] the root tensor does not require a gradient");
  Tensor seed = grad;
  if (!seed.defined()) {
    KBIT_CHECK(root.numel() == 1,
               "[backward] expected a one-element root or an explicit "
               "gradient, got shape ",
               shape_str(root.shape()));
    seed = Tensor::ones(root.shape(), root.dtype(), MemTag::grad);
  }
  check_grad(root, seed, "backward");

  // Topological order by iterative depth-first search over grad_fn inputs.
  std::vector<TensorImpl*> order;
  std::unordered_map<TensorImpl*, Tensor> handle;
  std::unordered_set<TensorImpl*> visited;
  std::vector<std::pair<Tensor, size_t>> stack{{root, 0}};
  visited.insert(root.impl());
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    const auto& fn = t.grad_fn();
    if (fn && next < fn->inputs.size()) {
      const Tensor& in = fn->inputs[next++];
      if (in.defined() && in.requires_grad() &&
          visited.insert(in.impl()).second) {
        stack.push_back({in, 0});
      }
      continue;
    }
    order.push_back(t.impl());
    handle[t.impl()] = t;
    stack.pop_back();
  }

  // Walk from the root back to the leaves.
  NoGradGuard no_grad;
  std::unordered_map<TensorImpl*, Tensor> grads{{root.impl(), seed}};
  for (size_t k = order.size(); k-- > 0;) {
    TensorImpl* impl = order[k];
    auto it = grads.find(impl);
    if (it == grads.end()) continue;
    Tensor g = it->second;
    grads.erase(it);
    const Tensor& t = handle[impl];
    if (!t.grad_fn()) {  // a leaf: accumulate into .grad
      if (!t.grad().defined()) {
        t.set_grad(owned_copy(g, MemTag::grad));
      } else {
        add_into(t.grad(), g);
      }
      continue;
    }
    Node& node = *t.grad_fn();
    std::vector<Tensor> in_grads = node.backward(g);
    KBIT_CHECK(in_grads.size() == node.inputs.size(), "[backward] ", node.name,
               " returned ", in_grads.size(), " gradients for ",
               node.inputs.size(), " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      const Tensor& in = node.inputs[i];
      if (!in.defined() || !in.requires_grad() || !in_grads[i].defined()) {
        continue;
      }
      check_grad(in, in_grads[i], node.name);
      auto [slot, fresh] = grads.try_emplace(in.impl(), in_grads[i]);
      if (!fresh) {
        // Never add into a tensor a backward function may still hold.
        slot->second = sum_of(slot->second, in_grads[i]);
      }
    }
  }
}

}  // namespace kbit
