// Sorting networks checked by the 0-1 principle (every binary input for small
// n) and on random integers; pruned selection networks checked on the wires
// they keep.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include <pgkernels/network.h>

#include "check.h"

static void apply(const pgk::Network& net, std::vector<long>& v) {
  for (const auto& layer : net) {
    std::vector<char> used(v.size(), 0);
    for (const auto& c : layer) {
      if (used[c.i] || used[c.j] || c.i >= c.j) throw 1;  // layers must be disjoint
      used[c.i] = used[c.j] = 1;
      if (v[c.i] > v[c.j]) std::swap(v[c.i], v[c.j]);
    }
  }
}

int main() {
  std::mt19937_64 rng(7);
  for (int n = 0; n <= 70; ++n) {
    const pgk::Network net = pgk::oddeven_merge_sort(n);
    bool ok = true;
    if (n <= 16) {
      for (unsigned m = 0; m < (1u << n); ++m) {
        std::vector<long> v(n);
        for (int i = 0; i < n; ++i) v[i] = (m >> i) & 1;
        std::vector<long> w = v;
        std::sort(w.begin(), w.end());
        apply(net, v);
        ok = ok && v == w;
      }
    }
    for (int t = 0; t < 200; ++t) {
      std::vector<long> v(n);
      for (auto& x : v) x = long(rng() % 7) - 3;  // many ties
      std::vector<long> w = v;
      std::sort(w.begin(), w.end());
      apply(net, v);
      ok = ok && v == w;
    }
    CHECK(ok, "sorting network n=%d", n);
    if (n >= 1) {
      const std::vector<int> outs = n % 2 ? std::vector<int>{n / 2} : std::vector<int>{n / 2 - 1, n / 2};
      const pgk::Network sel = pgk::prune_network(net, n, outs);
      bool sok = pgk::network_size(sel) <= pgk::network_size(net);
      for (int t = 0; t < 300; ++t) {
        std::vector<long> v(n);
        for (auto& x : v) x = long(rng() % 11) - 5;
        std::vector<long> w = v;
        std::sort(w.begin(), w.end());
        apply(sel, v);
        for (int o : outs) sok = sok && v[o] == w[o];
      }
      CHECK(sok, "median selection network n=%d", n);
    }
  }
  CHECK(pgk::network_size(pgk::oddeven_merge_sort(16)) == 63, "Batcher 16 has 63 comparators");
  CHECK(pgk::oddeven_merge_sort(16).size() == 10, "Batcher 16 has depth 10");
  return report("network");
}
