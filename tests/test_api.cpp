// The calling forms of the public API that must keep compiling: the README's and the docs'
// snippets, the examples' and the public headers' documented uses, braced and designated
// initialisers included. A change that breaks one of them (an overload that makes a braced list
// ambiguous, a parameter type that no longer takes a vector) fails the build of this file, which
// includes only the umbrella header, as users do. Each test also runs its calls on a tiny graph
// and checks something that would differ if the call meant something else.
#include <gtest/gtest.h>

#include <array>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <utility>
#include <vector>

namespace {

using namespace tbgrad;

// ---------------------------------------------------------------- gradcheck

// The names gradcheck reported, in order, after checking that it passed and that it compared
// `checked` elements of each (0: all of them).
std::vector<std::string> checked_names(const GradcheckResult& r, std::int64_t checked = 0) {
  EXPECT_TRUE(r.ok) << r.report();
  std::vector<std::string> names;
  for (const GradcheckInputResult& in : r.inputs) {
    names.push_back(in.name);
    EXPECT_EQ(in.checked, checked ? checked : in.shape.numel()) << in.name;
  }
  return names;
}

// loss = mean(tanh(x wᵀ + b)) on a float64 graph, with x fed.
struct GradcheckGraph {
  Graph g{DType::kF64};
  Value w = g.param("w", {2, 3});
  Value b = g.param("b", {2});
  Value x = g.input("x", {4, 3});
  Value loss = mean(tanh(linear(x, w, b)));
  Tensor xv{Shape{4, 3}, DType::kF64};

  GradcheckGraph() {
    nn::Rng rng(3);
    nn::uniform(g.value(w), -1, 1, rng);
    nn::uniform(g.value(b), -1, 1, rng);
    nn::uniform(xv, -1, 1, rng);
  }
};

TEST(ApiGradcheck, BracedListsOfValuesAndOfFeeds) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, {{t.x, t.xv}})), wb);  // the README's
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w}, {{t.x, t.xv}})), std::vector<std::string>{"w"});
}

TEST(ApiGradcheck, AVectorOfValuesWithABracedListOfFeeds) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), {{t.x, t.xv}})), wb);
  const std::vector<Value> params = t.g.params();
  EXPECT_EQ(checked_names(gradcheck(t.loss, params, {{t.x, t.xv}})), wb);
}

TEST(ApiGradcheck, SpansAndArraysOfValues) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  std::vector<Value> params = t.g.params();
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(params), {{t.x, t.xv}})), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<Value>(params), {{t.x, t.xv}})), wb);
  const std::array<Value, 2> array = {t.b, t.w};
  EXPECT_EQ(checked_names(gradcheck(t.loss, array, {{t.x, t.xv}})),
            (std::vector<std::string>{"b", "w"}));
}

TEST(ApiGradcheck, FeedsAsAVectorOrASpan) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  const std::vector<std::pair<Value, Tensor>> feeds = {{t.x, t.xv}};
  const std::span<const std::pair<Value, Tensor>> feed_span(feeds);
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, feeds)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), feeds)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, feed_span)), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(t.g.params()), feed_span)), wb);
}

TEST(ApiGradcheck, AnInputInWrtIsCheckedThroughItsFeed) {
  GradcheckGraph t;
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.x, t.w}, {{t.x, t.xv}})),
            (std::vector<std::string>{"x", "w"}));
}

TEST(ApiGradcheck, WithoutFeeds) {
  Graph g(DType::kF64);
  Value w = g.param("w", {2, 3});
  Value loss = sum(tanh(w));
  const std::vector<std::string> names = {"w"};
  EXPECT_EQ(checked_names(gradcheck(loss, {w})), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {})), names);
  EXPECT_EQ(checked_names(gradcheck(loss, g.params())), names);
  EXPECT_EQ(checked_names(gradcheck(loss, std::span<const Value>(g.params()))), names);
}

TEST(ApiGradcheck, WithOptions) {
  GradcheckGraph t;
  const std::vector<std::string> wb = {"w", "b"};
  const std::vector<std::pair<Value, Tensor>> feeds = {{t.x, t.xv}};
  GradcheckOptions options;
  options.max_elements_per_input = 2;
  EXPECT_EQ(checked_names(gradcheck(t.loss, {t.w, t.b}, {{t.x, t.xv}}, options), 2), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), feeds, options), 2), wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, t.g.params(), {{t.x, t.xv}},
                                    {.rtol = 1e-3, .max_elements_per_input = 1}),
                          1),
            wb);
  EXPECT_EQ(checked_names(gradcheck(t.loss, std::span<const Value>(t.g.params()),
                                    std::span<const std::pair<Value, Tensor>>(feeds), options),
                          2),
            wb);

  Graph g(DType::kF64);
  Value w = g.param("w", {2, 3});
  Value loss = sum(tanh(w));
  const std::vector<std::string> names = {"w"};
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, g.params(), options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {}, options), 2), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, {}, {.max_elements_per_input = 3}), 3), names);
  EXPECT_EQ(checked_names(gradcheck(loss, {w}, GradcheckOptions{.max_elements_per_input = 1}), 1),
            names);
}

// ---------------------------------------------------------------- pooling and convolution

TEST(ApiPooling, ABracedListIsPool2dOptionsInOrder) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  // {2}: kernel 2, stride = kernel; {2, 1}: kernel 2, stride 1; {2, 1, 1}: and padding 1.
  EXPECT_EQ(max_pool2d(x, {2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(avg_pool2d(x, {2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, {2, 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(avg_pool2d(x, {2, 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(max_pool2d(x, {2, 1, 1}).shape(), (Shape{2, 3, 9, 7}));
  EXPECT_EQ(avg_pool2d(x, {{2, 3}, {1, 2}}).shape(), (Shape{2, 3, 7, 2}));
}

TEST(ApiPooling, DesignatedOptions) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  EXPECT_EQ(max_pool2d(x, {.kernel = 2}).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, {.kernel = 2, .stride = 1}).shape(), (Shape{2, 3, 7, 5}));
  EXPECT_EQ(avg_pool2d(x, {.kernel = 4, .stride = 2}).shape(), (Shape{2, 3, 3, 2}));  // README
  EXPECT_EQ(avg_pool2d(x, {.kernel = 3, .stride = 1, .padding = 1}).shape(), (Shape{2, 3, 8, 6}));
  EXPECT_EQ(avg_pool2d(x, {.kernel = {2, 3}, .stride = {1, 3}}).shape(), (Shape{2, 3, 7, 2}));
  const Pool2dOptions options{.kernel = 2, .stride = 1};
  EXPECT_EQ(max_pool2d(x, options).shape(), (Shape{2, 3, 7, 5}));
}

TEST(ApiPooling, AKernelSizeAloneHasTheStrideOfTheKernel) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  EXPECT_EQ(max_pool2d(x, 2).shape(), (Shape{2, 3, 4, 3}));  // the README's custom_cnn
  EXPECT_EQ(avg_pool2d(x, 2).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(max_pool2d(x, Pair2{2, 3}).shape(), (Shape{2, 3, 4, 2}));
  EXPECT_EQ(avg_pool2d(x, Pair2{2, 3}).shape(), (Shape{2, 3, 4, 2}));
  const std::int64_t k = 2;
  EXPECT_EQ(max_pool2d(x, k).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(avg_pool2d(x, 2U).shape(), (Shape{2, 3, 4, 3}));
}

TEST(ApiConv2d, WithAndWithoutBiasAndOptions) {
  Graph g;
  Value x = g.input("x", {2, 1, 6, 6});
  Value w = g.param("w", {4, 1, 3, 3});
  Value b = g.param("b", {4});
  EXPECT_EQ(conv2d(x, w, b, {.stride = 1, .padding = 0}).shape(), (Shape{2, 4, 4, 4}));  // README
  EXPECT_EQ(conv2d(x, w, b).shape(), (Shape{2, 4, 4, 4}));
  EXPECT_EQ(conv2d(x, w).shape(), (Shape{2, 4, 4, 4}));
  EXPECT_EQ(conv2d(x, w, {.padding = 1}).shape(), (Shape{2, 4, 6, 6}));  // the README's custom_cnn
  EXPECT_EQ(conv2d(x, w, b, {.padding = 1}).shape(), (Shape{2, 4, 6, 6}));
  EXPECT_EQ(conv2d(x, w, {.stride = 2}).shape(), (Shape{2, 4, 2, 2}));
  EXPECT_EQ(conv2d(x, w, b, {.stride = {1, 2}, .padding = {1, 0}}).shape(), (Shape{2, 4, 6, 2}));
  // In order: {stride} and {stride, padding}.
  EXPECT_EQ(conv2d(x, w, {2}).shape(), (Shape{2, 4, 2, 2}));
  EXPECT_EQ(conv2d(x, w, b, {1, 1}).shape(), (Shape{2, 4, 6, 6}));
  const Conv2dOptions options{.stride = 1, .padding = 1};
  EXPECT_EQ(conv2d(x, w, options).shape(), (Shape{2, 4, 6, 6}));
  EXPECT_EQ(conv2d(x, w, Value(), options).shape(), (Shape{2, 4, 6, 6}));  // no bias
}

}  // namespace
