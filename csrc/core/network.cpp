#include <pgkernels/network.h>

#include <algorithm>
#include <stdexcept>

namespace pgk {

Network oddeven_merge_sort(int n) {
  if (n < 0) throw std::invalid_argument("oddeven_merge_sort: n must be >= 0");
  Network net;
  int N = 1;
  while (N < n) N <<= 1;
  for (int p = 1; p < N; p <<= 1) {
    for (int k = p; k >= 1; k >>= 1) {
      std::vector<Comparator> layer;
      for (int j = k % p; j + k < N; j += 2 * k) {
        for (int i = 0; i < k && i + j + k < N; ++i) {
          const int a = i + j, b = i + j + k;
          // stay within one merge block of size 2p
          if (a / (2 * p) != b / (2 * p)) continue;
          if (b < n) layer.push_back({a, b});
        }
      }
      if (!layer.empty()) net.push_back(std::move(layer));
    }
  }
  return net;
}

Network prune_network(const Network& net, int n, const std::vector<int>& outputs) {
  std::vector<char> live(std::max(n, 0), 0);
  for (int o : outputs) {
    if (o < 0 || o >= n) throw std::invalid_argument("prune_network: output wire out of range");
    live[o] = 1;
  }
  Network out(net.size());
  for (size_t l = net.size(); l-- > 0;) {
    for (const Comparator& c : net[l]) {
      if (live[c.i] || live[c.j]) {
        out[l].push_back(c);
        live[c.i] = live[c.j] = 1;
      }
    }
  }
  Network kept;
  for (auto& layer : out)
    if (!layer.empty()) kept.push_back(std::move(layer));
  return kept;
}

int64_t network_size(const Network& net) {
  int64_t s = 0;
  for (const auto& l : net) s += int64_t(l.size());
  return s;
}

}  // namespace pgk
