#include "tests/random_net.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include "tests/thread_ranks.hpp"

namespace tbgrad::testing {

Choices Choices::seeded(std::uint64_t seed) {
  Choices c;
  c.rng_ = std::make_shared<nn::Rng>(seed);
  return c;
}

Choices Choices::from_bytes(std::span<const std::uint8_t> bytes) {
  Choices c;
  c.bytes_ = bytes;
  return c;
}

int Choices::pick(int n) {
  if (n < 1 || n > 256) throw std::logic_error("Choices::pick: n must be in [1, 256]");
  if (rng_) return static_cast<int>(rng_->below(static_cast<std::uint64_t>(n)));
  const int byte = at_ < bytes_.size() ? bytes_[at_] : 0;
  ++at_;
  return byte % n;
}

namespace {

// The choices of one network: drawn and recorded while it is first built, replayed by its
// ModelFn for every other batch size, so that every size builds the same network.
class Script {
 public:
  explicit Script(Choices& source) : source_(&source) {}
  explicit Script(std::shared_ptr<const std::vector<std::uint8_t>> recorded)
      : recorded_(std::move(recorded)) {}

  int pick(int n) {
    if (n <= 1) return 0;  // no choice to make: nothing recorded
    if (!recorded_) {
      const int v = source_->pick(n);
      taken_.push_back(static_cast<std::uint8_t>(v));
      return v;
    }
    if (at_ >= recorded_->size() || (*recorded_)[at_] >= n) {
      throw std::logic_error("random_net: a replay made other choices than the first build");
    }
    return (*recorded_)[at_++];
  }
  template <typename T>
  const T& one_of(std::initializer_list<T> options) {
    return options.begin()[pick(static_cast<int>(options.size()))];
  }
  std::vector<std::uint8_t>& taken() { return taken_; }

 private:
  Choices* source_ = nullptr;
  std::shared_ptr<const std::vector<std::uint8_t>> recorded_;
  std::vector<std::uint8_t> taken_;
  std::size_t at_ = 0;
};

std::vector<std::int64_t> divisors_above_one(std::int64_t n) {
  std::vector<std::int64_t> d;
  for (std::int64_t k = 2; k <= n; ++k) {
    if (n % k == 0) d.push_back(k);
  }
  return d;
}

// A value of the pool: batch-major, `rows` rows per example (rank 2: [rows * B, F]; rank 4:
// [B, C, H, W] with rows 1), named `label` in the description.
struct Item {
  Item(Value value, std::int64_t r, std::string l = "") : v(value), rows(r), label(std::move(l)) {}
  Value v;
  std::int64_t rows = 1;
  std::string label;
};

class Builder {
 public:
  Builder(Graph& g, nn::ParamStore& store, std::int64_t batch, Script& script, std::string* out)
      : g_(g), store_(store), b_(batch), s_(script), out_(out) {}

  nn::ModelGraph build(int* classes) {
    nn::ModelGraph m;
    if (s_.pick(2) == 0) {
      m.inputs = g_.input("x", {b_, 1 + s_.pick(20)});
    } else {
      m.inputs = g_.input("x", {b_, 1 + s_.pick(3), 1 + s_.pick(8), 1 + s_.pick(8)});
    }
    pool_.push_back({m.inputs, 1, "x"});
    say("x", m.inputs, "input");
    const int layers = s_.pick(9);
    for (int l = 0; l < layers; ++l) {
      // Mostly the last value (depth), at times an earlier one (branches).
      const auto size = static_cast<int>(pool_.size());
      const Item src = pool_[static_cast<std::size_t>(s_.pick(2) == 0 ? size - 1 : s_.pick(size))];
      Item out = src.v.shape().rank() == 4 ? image_layer(src) : matrix_layer(src);
      out.label = "h" + std::to_string(l + 1);
      say(out.label, out.v, last_);
      pool_.push_back(out);
    }
    // The head: the last value (or another), as [B, F].
    const auto size = static_cast<int>(pool_.size());
    Item h = s_.pick(4) != 0 ? pool_.back() : pool_[static_cast<std::size_t>(s_.pick(size))];
    if (h.v.shape().rank() == 4) h = {flatten(h.v), 1, "flatten(" + h.label + ")"};
    if (h.rows > 1) {
      h = {reshape(h.v, {b_, h.rows * h.v.shape()[1]}), 1, "merge_rows(" + h.label + ")"};
    }
    const std::int64_t f = h.v.shape()[1];
    std::string head;
    if (f >= 2 && f <= 6 && s_.pick(2) == 0) {
      m.outputs = h.v;  // the value itself as the scores (the input, at times)
      head = h.label;
    } else {
      const std::int64_t c = 2 + s_.pick(5);
      const Value w = weight({c, f});
      m.outputs = s_.pick(3) != 0 ? linear(h.v, w, weight({c})) : linear(h.v, w);
      head = "linear(" + h.label + ")";
    }
    *classes = static_cast<int>(m.outputs.shape()[1]);
    say("logits", m.outputs, head);
    const std::string loss = pick_loss(m);
    if (params_ == 0 || s_.pick(3) == 0) {  // a second loss term: a batch mean too
      const Item& other = pool_[static_cast<std::size_t>(s_.pick(size))];
      Value v = other.v;
      std::string label = other.label;
      if (params_ == 0) {  // the model's only parameter
        const Value p = weight({1});
        v = mul(v, p);
        label = "mul(" + label + ", " + wname(p) + ")";
      }
      m.loss = add(m.loss, scale(mean(v), 0.5));
      say("loss", m.loss, loss + " + 0.5 * mean(" + label + ")");
      if (sum_) exact_ = false;  // a sum plus a mean: the batch runs whole
    } else {
      say("loss", m.loss, loss);
    }
    return m;
  }

  std::int64_t params() const { return params_; }
  // The float targets per example (0: class labels), whether they are 0 or 1, and whether the
  // evaluator's batches give the loss over the data set (RandomNet).
  std::int64_t targets() const { return targets_; }
  bool multi_hot() const { return multi_hot_; }
  bool exact() const { return exact_; }

 private:
  // A new parameter, or at times (a parameter used twice) one made before with this shape.
  Value weight(const Shape& shape) {
    std::vector<Value> same;
    for (const Value& w : weights_) {
      if (w.shape() == shape) same.push_back(w);
    }
    if (!same.empty() && s_.pick(4) == 0) {
      const Value w = same[static_cast<std::size_t>(s_.pick(static_cast<int>(same.size())))];
      note_ += " reuses " + w.name();
      return w;
    }
    const Value w = store_.param(g_, "p" + std::to_string(params_++), shape);
    weights_.push_back(w);
    return w;
  }
  std::string wname(const Value& w) { return w.name() + " " + w.shape().str(); }

  // The labels and the loss over the logits m.outputs [B, C]: mostly softmax cross-entropy over
  // class labels; at times another loss of ops/loss.hpp, over class labels or float targets
  // [B, C], a mean or a sum, or a class-weighted mean (which the trainer keeps whole: Note
  // [Loss split]). Returns the loss as the description says it.
  std::string pick_loss(nn::ModelGraph& m) {
    const int kind = s_.pick(3) == 0 ? 1 + s_.pick(8) : 0;
    const std::int64_t c = m.outputs.shape()[1];
    const Reduction r = s_.pick(3) == 0 ? Reduction::kSum : Reduction::kMean;
    const std::string red = r == Reduction::kSum ? ", sum)" : ")";
    if (kind >= 5) {
      m.labels = g_.input("targets", {b_, c});
      targets_ = c;
      sum_ = r == Reduction::kSum;
      switch (kind) {
        case 5: m.loss = mse_loss(m.outputs, m.labels, r); return "mse(logits, targets" + red;
        case 6: m.loss = l1_loss(m.outputs, m.labels, r); return "l1(logits, targets" + red;
        case 7:
          m.loss = huber_loss(m.outputs, m.labels, 0.5, r);
          return "huber(logits, targets, 0.5" + red;
        default:
          multi_hot_ = true;
          m.loss = binary_cross_entropy_with_logits(m.outputs, m.labels, r);
          return "bce_with_logits(logits, multi_hot" + red;
      }
    }
    m.labels = g_.input_labels("labels", {b_});
    switch (kind) {
      case 0: m.loss = softmax_cross_entropy(m.outputs, m.labels); return "cross_entropy(logits)";
      case 1:
        m.loss = softmax_cross_entropy(m.outputs, m.labels, {.label_smoothing = 0.2});
        return "cross_entropy(logits, smoothing 0.2)";
      case 2:
        sum_ = true;
        m.loss = softmax_cross_entropy(m.outputs, m.labels, {.reduction = Reduction::kSum});
        return "cross_entropy(logits, sum)";
      case 3:
        sum_ = r == Reduction::kSum;
        m.loss = nll_loss(log_softmax(m.outputs), m.labels, r);
        return "nll(log_softmax(logits)" + red;
      default: {
        Tensor w(Shape{c}, g_.dtype());
        for (std::int64_t j = 0; j < c; ++j) w.set(j, 0.5 + 0.25 * static_cast<double>(j % 4));
        exact_ = false;
        m.loss = softmax_cross_entropy(m.outputs, m.labels, {.weights = g_.constant(w, "w")});
        return "cross_entropy(logits, class weights)";
      }
    }
  }

  Value activation(const Value& v, const std::string& label) {
    switch (s_.pick(3)) {
      case 0: last_ = "relu(" + label + ")"; return relu(v);
      case 1: last_ = "sigmoid(" + label + ")"; return sigmoid(v);
      default: last_ = "tanh(" + label + ")"; return tbgrad::tanh(v);
    }
  }
  Value binary(const Value& a, const Value& b, int op) {
    return op == 0 ? add(a, b) : op == 1 ? sub(a, b) : mul(a, b);
  }
  // Another value of the pool with src's shape (src itself included): a skip connection.
  const Item& partner(const Item& src) {
    std::vector<const Item*> same;
    for (const Item& it : pool_) {
      if (it.v.shape() == src.v.shape() && it.rows == src.rows) same.push_back(&it);
    }
    return *same[static_cast<std::size_t>(s_.pick(static_cast<int>(same.size())))];
  }

  // src is [rows * B, F].
  Item matrix_layer(const Item& src) {
    const std::int64_t r = src.rows, rb = src.rows * b_, f = src.v.shape()[1];
    const std::string& in = src.label;
    note_.clear();
    switch (s_.pick(15)) {
      case 0: {
        const Value w = weight({1 + s_.pick(12), f});
        const bool bias = s_.pick(3) != 0;
        const Value bv = bias ? weight({w.shape()[0]}) : Value();
        last_ = "linear(" + in + ", " + wname(w) + (bias ? ", " + wname(bv) : "") + ")";
        return {bias ? linear(src.v, w, bv) : linear(src.v, w), r};
      }
      case 1: {
        const Value w = weight({f, 1 + s_.pick(12)});
        last_ = "matmul(" + in + ", " + wname(w) + ")";
        return {matmul(src.v, w), r};
      }
      case 2: return {activation(src.v, in), r};
      case 3:
        if (s_.pick(2) == 0) {
          last_ = "softmax(" + in + ")";
          return {softmax(src.v), r};
        } else {
          last_ = "log_softmax(" + in + ")";
          return {log_softmax(src.v), r};
        }
      case 4: {
        const Item& o = partner(src);
        const int op = s_.pick(3);
        last_ = std::string(op == 0 ? "add" : op == 1 ? "sub" : "mul") + "(" + in + ", " + o.label + ")";
        return {binary(src.v, o.v, op), r};
      }
      case 5: {
        const Value p = s_.pick(2) == 0 ? weight({f}) : weight({1, f});
        const int op = s_.pick(2) == 0 ? 0 : 2;
        last_ = std::string(op == 0 ? "add" : "mul") + "(" + in + ", " + wname(p) + ")";
        return {binary(src.v, p, op), r};
      }
      case 6: {
        const double k = s_.one_of({-1.5, 0.5, 2.0});
        last_ = "scale(" + in + ", " + std::to_string(k) + ")";
        return {scale(src.v, k), r};
      }
      case 7: {  // through [features, rows * B]: not batch-major
        const Value w1 = weight({1 + s_.pick(8), f});
        Value t = matmul(w1, src.v, {.transpose_b = true});
        std::string tl = "matmul(" + wname(w1) + ", " + in + "^T)";
        if (s_.pick(2) == 0) {
          t = activation(t, tl);
          tl = last_;
        }
        const Value w2 = weight({w1.shape()[0], 1 + s_.pick(8)});
        last_ = "matmul((" + tl + ")^T, " + wname(w2) + ")";
        return {matmul(t, w2, {.transpose_a = true}), r};
      }
      case 8: {  // an example's features over several rows
        const auto d = divisors_above_one(f);
        if (d.empty()) break;
        const std::int64_t k = d[static_cast<std::size_t>(s_.pick(static_cast<int>(d.size())))];
        last_ = "split_rows(" + in + ", " + std::to_string(k) + ")";
        return {reshape(src.v, {rb * k, f / k}), r * k};
      }
      case 9:
        if (r == 1) break;
        last_ = "merge_rows(" + in + ")";
        return {reshape(src.v, {b_, r * f}), 1};
      case 12: return dropout_layer(src);
      case 13:  // batch norm over the F features: r * B >= 2 values per feature only if r >= 2
        if (r < 2) break;
        return batch_norm_layer(src);
      case 14:  // layer norm over each row's F features (one example's)
        if (f < 2) break;
        return layer_norm_layer(src, 1);
      case 10: {
        if (r != 1) break;
        const auto dc = divisors_above_one(f);
        const std::int64_t c = s_.pick(2) == 0 || dc.empty()
                                   ? 1
                                   : dc[static_cast<std::size_t>(s_.pick(static_cast<int>(dc.size())))];
        auto dh = divisors_above_one(f / c);
        dh.insert(dh.begin(), 1);
        const std::int64_t h = dh[static_cast<std::size_t>(s_.pick(static_cast<int>(dh.size())))];
        last_ = "reshape(" + in + ", [B," + std::to_string(c) + "," + std::to_string(h) + "," +
                std::to_string(f / c / h) + "])";
        return {reshape(src.v, {b_, c, h, f / c / h}), 1};
      }
      default: {
        Value one = src.v;
        std::string ol = in;
        if (f != 1) {
          const Value w = weight({1, f});
          one = linear(src.v, w);
          ol = "linear(" + in + ", " + wname(w) + ")";
        }
        const std::int64_t k = 1 + s_.pick(6);
        last_ = "broadcast_to(" + ol + ", [" + std::to_string(rb) + "," + std::to_string(k) + "])";
        return {broadcast_to(one, {rb, k}), r};
      }
    }
    return {activation(src.v, in), r};
  }

  // src is [B, C, H, W].
  Item image_layer(const Item& src) {
    const Shape s = src.v.shape();
    const std::int64_t c = s[1], h = s[2], w = s[3];
    const std::string& in = src.label;
    note_.clear();
    switch (s_.pick(15)) {
      case 0:
      case 1: {
        int kh = 1 + s_.pick(3), kw = 1 + s_.pick(3);
        const int ph = s_.pick(kh / 2 + 1), pw = s_.pick(kw / 2 + 1);
        kh = static_cast<int>(std::min<std::int64_t>(kh, h + 2 * ph));
        kw = static_cast<int>(std::min<std::int64_t>(kw, w + 2 * pw));
        const Pair2 stride{1 + s_.pick(2), 1 + s_.pick(2)};
        const Value k = weight({1 + s_.pick(4), c, kh, kw});
        const bool bias = s_.pick(2) == 0;
        const Value bv = bias ? weight({k.shape()[0]}) : Value();
        const Conv2dOptions o{.stride = stride, .padding = {ph, pw}};
        last_ = "conv2d(" + in + ", " + wname(k) + (bias ? ", " + wname(bv) : "") + ", stride " +
                stride.str() + ", padding " + o.padding.str() + ")";
        return {bias ? conv2d(src.v, k, bv, o) : conv2d(src.v, k, o), 1};
      }
      case 2: {
        const int kh = 1 + s_.pick(static_cast<int>(std::min<std::int64_t>(h, 3)));
        const int kw = 1 + s_.pick(static_cast<int>(std::min<std::int64_t>(w, 3)));
        const Pool2dOptions o{.kernel = {kh, kw},
                              .stride = {s_.pick(3), s_.pick(3)},
                              .padding = {s_.pick(kh / 2 + 1), s_.pick(kw / 2 + 1)}};
        const bool avg = s_.pick(2) == 0;
        last_ = std::string(avg ? "avg_pool2d(" : "max_pool2d(") + in + ", kernel " +
                o.kernel.str() + ", stride " + o.stride.str() + ", padding " + o.padding.str() +
                ")";
        return {avg ? avg_pool2d(src.v, o) : max_pool2d(src.v, o), 1};
      }
      case 3: return {activation(src.v, in), 1};
      case 4: {
        const Item& o = partner(src);
        const int op = s_.pick(3);
        last_ = std::string(op == 0 ? "add" : op == 1 ? "sub" : "mul") + "(" + in + ", " + o.label + ")";
        return {binary(src.v, o.v, op), 1};
      }
      case 5: {
        const int form = s_.pick(3);
        const Value p = form == 0 ? weight({c, 1, 1}) : form == 1 ? weight({1, c, 1, 1}) : weight({w});
        const int op = s_.pick(2) == 0 ? 0 : 2;
        last_ = std::string(op == 0 ? "add" : "mul") + "(" + in + ", " + wname(p) + ")";
        return {binary(src.v, p, op), 1};
      }
      case 6: last_ = "flatten(" + in + ")"; return {flatten(src.v), 1};
      case 7: last_ = "reshape(" + in + ", [B*C, H*W])"; return {reshape(src.v, {b_ * c, h * w}), c};
      case 8: {
        const double k = s_.one_of({-1.5, 0.5, 2.0});
        last_ = "scale(" + in + ", " + std::to_string(k) + ")";
        return {scale(src.v, k), 1};
      }
      case 9: return conv2_layer(src);
      case 10: return dropout_layer(src);
      case 11:  // B * H * W >= 2 values per channel, for any batch
        if (h * w < 2) return {activation(src.v, in), 1};
        return batch_norm_layer(src);
      case 12: {  // group norm: C / groups channels of H * W, at least 2 values per group
        auto d = divisors_above_one(c);
        d.insert(d.begin(), 1);
        const std::int64_t groups = d[static_cast<std::size_t>(s_.pick(static_cast<int>(d.size())))];
        if (c / groups * h * w < 2) return {activation(src.v, in), 1};
        return group_norm_layer(src, groups);
      }
      case 13: {  // layer norm over W, [H, W] or [C, H, W]: at least 2 values
        const int k = 1 + s_.pick(3);
        if ((k == 1 ? w : k == 2 ? h * w : c * h * w) < 2) return {activation(src.v, in), 1};
        return layer_norm_layer(src, k);
      }
      default: return {activation(src.v, in), 1};
    }
  }

  // src is [B, C, H, W]: a grouped (depthwise at times) and dilated convolution, a transposed
  // convolution, or a global pooling.
  Item conv2_layer(const Item& src) {
    const Shape s = src.v.shape();
    const std::int64_t c = s[1], h = s[2], w = s[3];
    const std::string& in = src.label;
    auto divisor_of_c = [&] {  // 1, c (depthwise) or another divisor
      auto d = divisors_above_one(c);
      d.insert(d.begin(), 1);
      return static_cast<int>(d[static_cast<std::size_t>(s_.pick(static_cast<int>(d.size())))]);
    };
    // Dilation d of a k-tap kernel spanning at most `extent` positions.
    auto fitting_dilation = [&](int k, std::int64_t extent) {
      const int d = 1 + s_.pick(3);
      if (k == 1) return d;
      return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(d, (extent - 1) / (k - 1))));
    };
    switch (s_.pick(3)) {
      case 0: {
        const int groups = divisor_of_c();
        const int ph = s_.pick(3), pw = s_.pick(3);
        const int kh = static_cast<int>(std::min<std::int64_t>(1 + s_.pick(3), h + 2 * ph));
        const int kw = static_cast<int>(std::min<std::int64_t>(1 + s_.pick(3), w + 2 * pw));
        const Conv2dOptions o{.stride = {1 + s_.pick(2), 1 + s_.pick(2)},
                              .padding = {ph, pw},
                              .dilation = {fitting_dilation(kh, h + 2 * ph),
                                           fitting_dilation(kw, w + 2 * pw)},
                              .groups = groups};
        const Value k = weight({groups * (1 + s_.pick(3)), c / groups, kh, kw});
        const bool bias = s_.pick(2) == 0;
        const Value bv = bias ? weight({k.shape()[0]}) : Value();
        last_ = "conv2d(" + in + ", " + wname(k) + (bias ? ", " + wname(bv) : "") + ", stride " +
                o.stride.str() + ", padding " + o.padding.str() + ", dilation " +
                o.dilation.str() + ", groups " + std::to_string(groups) + ")";
        return {bias ? conv2d(src.v, k, bv, o) : conv2d(src.v, k, o), 1};
      }
      case 1: {
        const int groups = divisor_of_c();
        const int kh = 1 + s_.pick(3), kw = 1 + s_.pick(3);
        ConvTranspose2dOptions o{.stride = {1 + s_.pick(2), 1 + s_.pick(2)},
                                 .groups = groups,
                                 .dilation = {1 + s_.pick(2), 1 + s_.pick(2)}};
        // Padding at most half the dilated kernel's reach: the output keeps at least H rows.
        o.padding = {s_.pick(o.dilation.h * (kh - 1) / 2 + 1),
                     s_.pick(o.dilation.w * (kw - 1) / 2 + 1)};
        o.output_padding = {s_.pick(o.stride.h), s_.pick(o.stride.w)};
        const Value k = weight({c, 1 + s_.pick(3), kh, kw});
        const bool bias = s_.pick(2) == 0;
        const Value bv = bias ? weight({k.shape()[1] * groups}) : Value();
        last_ = "conv_transpose2d(" + in + ", " + wname(k) + (bias ? ", " + wname(bv) : "") +
                ", stride " + o.stride.str() + ", padding " + o.padding.str() +
                ", output_padding " + o.output_padding.str() + ", groups " +
                std::to_string(groups) + ", dilation " + o.dilation.str() + ")";
        return {bias ? conv_transpose2d(src.v, k, bv, o) : conv_transpose2d(src.v, k, o), 1};
      }
      default: {
        const bool avg = s_.pick(2) == 0;
        last_ = std::string(avg ? "global_avg_pool2d(" : "global_max_pool2d(") + in + ")";
        return {avg ? global_avg_pool2d(src.v) : global_max_pool2d(src.v), 1};
      }
    }
  }

  // Dropout and batch norm: the trainer gives each graph its mode, step, seed and first
  // example (Note [Run info]); the whole-batch reference runs with the same.
  Item dropout_layer(const Item& src) {
    const double p = s_.one_of({0.2, 0.5});
    last_ = "dropout(" + src.label + ", " + std::to_string(p) + ")";
    return {dropout(src.v, p), src.rows};
  }
  Item batch_norm_layer(const Item& src) {
    const std::string name = "bn" + std::to_string(params_);
    const Value gamma = store_.param(g_, "p" + std::to_string(params_++), {src.v.shape()[1]},
                                     nn::Role::kNormScale);
    const Value beta = store_.param(g_, "p" + std::to_string(params_++), {src.v.shape()[1]},
                                    nn::Role::kNormShift);
    const Value mean = store_.buffer(g_, name + ".running_mean", {src.v.shape()[1]}, 0.0);
    const Value var = store_.buffer(g_, name + ".running_var", {src.v.shape()[1]}, 1.0);
    last_ = "batch_norm(" + src.label + ", " + wname(gamma) + ", " + wname(beta) + ")";
    return {batch_norm(src.v, gamma, beta, mean, var), src.rows};
  }

  // Layer and group norm, with a weight and a bias (as nn's layers create them) or without:
  // each example normalised alone, so the trainer splits the batch as for any other op. eps is
  // 0.01, not the default 1e-5 (which the op table tests): the gradient through a constant row
  // (a broadcast value's) is exactly 0 but computed as a float sum of terms 1 / sqrt(eps) times
  // the incoming gradient that cancel to rounding, which the micro-batches' graphs and the whole
  // batch's round differently; at 1e-5 that noise (x316) exceeded the test's tolerance in 3 of
  // 1,500 networks, at 0.01 (x10) in none of 4,500.
  static constexpr double kNormEps = 0.01;
  std::pair<Value, Value> norm_affine(const Shape& shape) {
    if (s_.pick(3) == 0) return {Value(), Value()};
    const Value scale = store_.param(g_, "p" + std::to_string(params_++), shape, nn::Role::kNormScale);
    const Value shift = store_.param(g_, "p" + std::to_string(params_++), shape, nn::Role::kNormShift);
    return {scale, shift};
  }
  std::string affine_label(const std::pair<Value, Value>& a) {
    return a.first.valid() ? ", " + wname(a.first) + ", " + wname(a.second) : "";
  }
  Item layer_norm_layer(const Item& src, int k) {
    const Shape s = src.v.shape();
    std::vector<std::int64_t> dims;
    for (int i = s.rank() - k; i < s.rank(); ++i) dims.push_back(s[i]);
    const auto a = norm_affine(Shape{std::span<const std::int64_t>(dims)});
    last_ = "layer_norm(" + src.label + ", rank " + std::to_string(k) + affine_label(a) + ")";
    return {layer_norm(src.v, k, a.first, a.second, {.eps = kNormEps}), src.rows};
  }
  Item group_norm_layer(const Item& src, std::int64_t groups) {
    const auto a = norm_affine(Shape{src.v.shape()[1]});
    last_ = "group_norm(" + src.label + ", " + std::to_string(groups) + affine_label(a) + ")";
    return {group_norm(src.v, groups, a.first, a.second, {.eps = kNormEps}), src.rows};
  }

  void say(const std::string& label, const Value& v, const std::string& what) {
    if (!out_) return;
    *out_ += "  " + label + " " + v.shape().str() + " = " + what + note_ + "\n";
    note_.clear();
  }

  Graph& g_;
  nn::ParamStore& store_;
  std::int64_t b_;
  Script& s_;
  std::string* out_;
  std::vector<Item> pool_;
  std::vector<Value> weights_;
  std::int64_t params_ = 0;
  std::string last_, note_;
  std::int64_t targets_ = 0;
  bool multi_hot_ = false, sum_ = false, exact_ = true;
};

}  // namespace

RandomNet random_net(Choices& choices) {
  RandomNet net;
  net.batch = choices.pick(4) == 0 ? 17 + choices.pick(24) : 1 + choices.pick(12);
  Script first(choices);
  {
    Graph g;
    nn::ParamStore store;
    Builder b(g, store, net.batch, first, &net.description);
    b.build(&net.classes);
    net.params = b.params();
    net.targets = b.targets();
    net.multi_hot = b.multi_hot();
    net.batched_loss_exact = b.exact();
    const Shape x = g.inputs()[0].shape();
    net.rows = x.rank() == 4 ? static_cast<int>(x[1] * x[2]) : 1;
    net.cols = static_cast<int>(x.rank() == 4 ? x[3] : x[1]);
  }
  auto script = std::make_shared<const std::vector<std::uint8_t>>(std::move(first.taken()));
  net.model = [script](Graph& g, nn::ParamStore& store, std::int64_t batch) {
    Script replay(script);
    int classes = 0;
    return Builder(g, store, batch, replay, nullptr).build(&classes);
  };
  net.description = "batch " + std::to_string(net.batch) + ", " + std::to_string(net.params) +
                    " parameters:\n" + net.description;
  return net;
}

data::Dataset random_data(const RandomNet& net, std::int64_t count, std::uint64_t seed) {
  data::Dataset d;
  d.count = count;
  d.rows = net.rows;
  d.cols = net.cols;
  nn::Rng rng(seed);
  d.images.resize(static_cast<std::size_t>(count * d.example_size()));
  for (auto& p : d.images) p = static_cast<std::uint8_t>(rng.below(256));
  if (net.targets > 0) {
    d.target_shape = {net.targets};
    for (std::int64_t i = 0; i < count * net.targets; ++i) {
      d.targets.push_back(net.multi_hot ? static_cast<float>(rng.below(2))
                                        : static_cast<float>(rng.below(2000)) / 1000.0f - 1.0f);
    }
    return d;
  }
  for (std::int64_t i = 0; i < count; ++i) {
    d.labels.push_back(static_cast<std::uint8_t>(rng.below(static_cast<std::uint64_t>(net.classes))));
  }
  return d;
}

std::vector<std::int64_t> micro_batches_for(std::int64_t batch, Choices& choices) {
  std::vector<std::int64_t> m = {0, 1, batch};
  if (batch > 2) m.push_back(2 + choices.pick(static_cast<int>(std::min<std::int64_t>(batch - 2, 200))));
  std::sort(m.begin(), m.end());
  m.erase(std::unique(m.begin(), m.end()), m.end());
  return m;
}

// --- the differential test -----------------------------------------------------------------

namespace {

constexpr double kLr = 0.05, kMomentum = 0.9;
constexpr std::uint64_t kSeed = 17;  // the trainer's (TrainerOptions::seed)

// The plain whole-batch step: one graph over n examples, its gradients, an executor. Built on
// the trainer's own store, so it reads the weights the trainer is about to update.
struct Whole {
  Graph g;
  nn::ModelGraph m;
  std::vector<Value> grads;
  std::unique_ptr<Executor> ex;
  Tensor images, labels;

  Whole(const nn::ModelFn& model, nn::ParamStore& store, std::int64_t n) : n_(n) {
    m = model(g, store, n);
    grads = grad(m.loss, g.params());
    ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{m.loss, m.outputs, grads});
    images = Tensor(m.inputs.shape(), DType::kF32);
    labels = Tensor(m.labels.shape(), m.labels.dtype());  // class indices or float targets
    ex->bind(m.inputs, images).bind(m.labels, labels);
  }
  // Note [Run info]: the mode, and the trainer's step and seed (the first example is 0).
  void run(const data::Dataset& d, std::span<const std::int64_t> idx, bool training = true,
           std::uint64_t step = 0) {
    data::load_examples(d, idx, images, labels);
    ex->set_run_info(
        {.training = training, .step = step, .seed = kSeed, .first_example = 0, .examples = n_});
    ex->run();
  }
  std::int64_t n_;
  double loss() const { return (*ex)[m.loss].at(0); }
  std::int64_t correct() const {
    const Tensor& out = (*ex)[m.outputs];
    if (labels.dtype() != DType::kI32 || out.shape().rank() != 2) return 0;  // no classes
    const std::int64_t n = out.shape()[0], c = out.shape()[1];
    std::int64_t ok = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* row = out.data<float>() + i * c;
      ok += std::max_element(row, row + c) - row == labels.data<std::int32_t>()[i];
    }
    return ok;
  }
};

// What one configuration produced, compared bit for bit between configurations.
struct Run {
  std::vector<double> losses;
  std::vector<std::int64_t> correct;
  std::vector<std::vector<float>> grads;  // per step, every parameter's in turn
  std::vector<float> final;               // the weights and the optimizer state after the steps
};

std::vector<float> flat(std::span<const Tensor> ts) {
  std::vector<float> v;
  for (const Tensor& t : ts) v.insert(v.end(), t.data<float>(), t.data<float>() + t.numel());
  return v;
}

double largest(const std::vector<float>& v, std::size_t lo, std::size_t hi) {
  double m = 0;
  for (std::size_t j = lo; j < hi; ++j) m = std::max(m, std::abs(static_cast<double>(v[j])));
  return m;
}

class Checker {
 public:
  Checker(const RandomNet& net, const DiffOptions& o) : net_(net), o_(o) {
    const std::int64_t b = net.batch, tail = b / 2 + 1;
    data_ = random_data(net, 2 * b + tail, o.seed);
    for (std::int64_t i = 0; i < data_.count; ++i) order_.push_back(i);
    steps_ = {{0, b}, {b, b}, {2 * b, tail}};
    nn::ParamStore store;
    nn::create_parameters(net.model, store);
    nn::Rng rng(o.seed + 1);
    for (const Tensor& t : store.tensors()) {
      if (t.shape().rank() >= 2) {
        nn::xavier_uniform(t, rng);
      } else {
        nn::uniform(t, -0.5, 0.5, rng);
      }
    }
    init_ = flat(store.tensors());
    for (const Tensor& t : store.tensors()) sizes_.push_back(t.numel());
    names_ = store.names();
  }

  void check() {
    for (const std::int64_t micro : o_.micro_batches) {
      const std::string m = "micro-batch " + (micro ? std::to_string(micro) : "default");
      std::optional<Run> first;
      for (const int threads : o_.threads) {
        const std::string where = m + ", " + std::to_string(threads) + " threads";
        Run r;
        if (!guarded(where, [&] {
              ThreadScope scope(threads);
              r = train(micro, nullptr, where, !first);
            })) {
          continue;
        }
        if (first) {
          same(*first, r, where + " against " + std::to_string(o_.threads[0]) + " thread(s)");
        } else {
          first = std::move(r);
        }
      }
      if (!first || micro != o_.micro_batches[0]) continue;
      for (const int ranks : o_.ranks) {
        const std::string where = m + ", " + std::to_string(ranks) + " ranks";
        guarded(where, [&] { over_ranks(micro, ranks, *first, where); });
      }
    }
    guarded("evaluator", [&] { evaluate(); });
  }

  std::vector<std::string> bad;

 private:
  template <typename Fn>
  bool guarded(const std::string& where, const Fn& fn) {
    try {
      fn();
      return true;
    } catch (const std::exception& e) {
      bad.push_back(where + ": threw: " + e.what());
      return false;
    }
  }

  std::span<const std::int64_t> indices(std::size_t step) const {
    return std::span<const std::int64_t>(order_).subspan(
        static_cast<std::size_t>(steps_[step].first), static_cast<std::size_t>(steps_[step].second));
  }

  void load(const nn::ParamStore& store) const {
    std::size_t at = 0;
    for (const Tensor& t : store.tensors()) {
      std::memcpy(t.data<float>(), init_.data() + at, t.nbytes());
      at += static_cast<std::size_t>(t.numel());
    }
  }

  // Three steps of the trainer; with `reference`, each compared with the whole-batch step.
  Run train(std::int64_t micro, dist::Communicator* comm, const std::string& where,
            bool reference) {
    nn::ParamStore store;
    nn::create_parameters(net_.model, store);
    load(store);
    nn::Momentum opt(store.tensors(), kLr, kMomentum);
    nn::Trainer trainer(net_.model, store, opt,
                        {.batch_size = net_.batch, .micro_batch = micro, .comm = comm,
                         .seed = kSeed});
    std::map<std::int64_t, std::unique_ptr<Whole>> whole;
    Run run;
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const std::string at = where + ", step " + std::to_string(k + 1) + " (" +
                             std::to_string(steps_[k].second) + " examples)";
      std::vector<float> before, velocity, want;
      double want_loss = 0;
      std::int64_t want_correct = 0;
      if (reference) {
        auto& w = whole[steps_[k].second];
        if (!w) w = std::make_unique<Whole>(net_.model, store, steps_[k].second);
        w->run(data_, indices(k), true, static_cast<std::uint64_t>(opt.steps()));
        want_loss = w->loss();
        want_correct = w->correct();
        for (const Value& gv : w->grads) {
          const Tensor& t = (*w->ex)[gv];
          want.insert(want.end(), t.data<float>(), t.data<float>() + t.numel());
        }
        before = flat(store.tensors());
        for (const auto& [name, t] : opt.state())
          velocity.insert(velocity.end(), t.data<float>(), t.data<float>() + t.numel());
      }
      trainer.step(data_, indices(k));
      run.losses.push_back(trainer.loss());
      run.correct.push_back(trainer.correct());
      run.grads.push_back(flat(trainer.gradients()));
      if (!reference) continue;
      if (!std::isfinite(want_loss)) continue;  // nothing to compare within a tolerance
      if (std::abs(trainer.loss() - want_loss) > 1e-5 * std::max(1.0, std::abs(want_loss))) {
        bad.push_back(at + ": loss " + str(trainer.loss()) + ", whole batch " + str(want_loss));
      }
      if (trainer.correct() != want_correct) {
        bad.push_back(at + ": " + std::to_string(trainer.correct()) + " correct, whole batch " +
                      std::to_string(want_correct));
      }
      if (velocity.empty()) velocity.assign(want.size(), 0.0f);
      compare_gradients(run.grads.back(), want, before, velocity, flat(store.tensors()), at);
    }
    run.final = flat(store.tensors());
    for (const auto& [name, t] : opt.state())
      run.final.insert(run.final.end(), t.data<float>(), t.data<float>() + t.numel());
    return run;
  }

  // The trainer's gradient against the whole batch's, and its update against momentum SGD's
  // from the same weights and velocity with the whole batch's gradient.
  void compare_gradients(const std::vector<float>& got, const std::vector<float>& want,
                         const std::vector<float>& before, const std::vector<float>& velocity,
                         const std::vector<float>& after, const std::string& at) {
    if (got.size() != want.size()) {
      bad.push_back(at + ": " + std::to_string(got.size()) + " gradient values, whole batch " +
                    std::to_string(want.size()));
      return;
    }
    std::size_t lo = 0;
    for (std::size_t i = 0; i < sizes_.size(); ++i) {
      const auto hi = lo + static_cast<std::size_t>(sizes_[i]);
      const double tol = 1e-4 * largest(want, lo, hi) + 1e-6;
      for (std::size_t j = lo; j < hi; ++j) {
        const double d = std::abs(static_cast<double>(got[j]) - want[j]);
        if (!(d <= tol)) {
          bad.push_back(at + ": gradient of " + names_[i] + "[" + std::to_string(j - lo) +
                        "] " + str(got[j]) + ", whole batch " + str(want[j]) + " (tolerance " +
                        str(tol) + ")");
          break;
        }
        const double step = kLr * (kMomentum * velocity[j] + want[j]);
        const double expect = before[j] - step;
        if (!(std::abs(after[j] - expect) <= kLr * tol + 1e-6 * std::abs(expect))) {
          bad.push_back(at + ": " + names_[i] + "[" + std::to_string(j - lo) + "] updated to " +
                        str(after[j]) + ", momentum SGD on the whole batch's gradient " +
                        str(expect));
          break;
        }
      }
      lo = hi;
    }
  }

  void same(const Run& a, const Run& b, const std::string& where) {
    for (std::size_t k = 0; k < a.losses.size() && k < b.losses.size(); ++k) {
      const std::string at = where + ", step " + std::to_string(k + 1);
      if (std::memcmp(&a.losses[k], &b.losses[k], sizeof(double)) != 0 ||
          a.correct[k] != b.correct[k]) {
        bad.push_back(at + ": loss or correct count not bit-identical (" + str(b.losses[k]) +
                      " against " + str(a.losses[k]) + ")");
      }
      if (a.grads[k] != b.grads[k] && !same_bits(a.grads[k], b.grads[k])) {
        bad.push_back(at + ": gradients not bit-identical");
      }
    }
    if (a.losses.size() != b.losses.size() || !same_bits(a.final, b.final)) {
      bad.push_back(where + ": weights and optimizer state not bit-identical after the steps");
    }
  }
  static bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }

  void over_ranks(std::int64_t micro, int ranks, const Run& alone, const std::string& where) {
    ThreadScope scope(1);
    ThreadRanks group(ranks);
    std::vector<Run> runs(static_cast<std::size_t>(ranks));
    std::vector<std::string> errors(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        try {
          runs[static_cast<std::size_t>(r)] = train(micro, &group.member(r), where, false);
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
      const auto q = static_cast<std::size_t>(r);
      const std::string at = where + ", rank " + std::to_string(r);
      if (!errors[q].empty()) {
        bad.push_back(at + ": threw: " + errors[q]);
      } else {
        same(alone, runs[q], at + " against one process");
      }
    }
  }

  // The evaluator, in batches of the training batch size (a short last one), against one graph
  // over the whole data set.
  void evaluate() {
    nn::ParamStore store;
    nn::create_parameters(net_.model, store);
    load(store);
    const nn::Evaluation e = nn::Evaluator(net_.model, store, net_.batch).evaluate(data_);
    Whole w(net_.model, store, data_.count);
    w.run(data_, order_, false);
    if (!std::isfinite(w.loss())) return;
    if (net_.batched_loss_exact && std::abs(e.loss - w.loss()) > 1e-5 * std::max(1.0, std::abs(w.loss()))) {
      bad.push_back("evaluator: loss " + str(e.loss) + ", one graph " + str(w.loss()));
    }
    if (net_.targets > 0) {  // not class scores: no accuracy
      if (e.has_accuracy || !std::isnan(e.accuracy) || e.classes != 0 || !e.confusion.empty()) {
        bad.push_back("evaluator: an accuracy for float targets");
      }
      return;
    }
    const auto correct = static_cast<std::int64_t>(std::llround(e.accuracy * static_cast<double>(e.count)));
    if (e.count != data_.count || correct != w.correct()) {
      bad.push_back("evaluator: " + std::to_string(correct) + " of " + std::to_string(e.count) +
                    " correct, one graph " + std::to_string(w.correct()) + " of " +
                    std::to_string(data_.count));
    }
  }

  static std::string str(double v) {
    std::ostringstream s;
    s.precision(9);
    s << v;
    return s.str();
  }

  const RandomNet& net_;
  const DiffOptions& o_;
  data::Dataset data_;
  std::vector<std::int64_t> order_;
  std::vector<std::pair<std::int64_t, std::int64_t>> steps_;  // first example, count
  std::vector<float> init_;
  std::vector<std::int64_t> sizes_;
  std::vector<std::string> names_;
};

}  // namespace

std::vector<std::string> check_trainer(const RandomNet& net, const DiffOptions& options) {
  Checker c(net, options);
  c.check();
  return std::move(c.bad);
}

}  // namespace tbgrad::testing
