// Comparator networks for sorting and selection on secret shares.
//
// A network is a list of layers; the comparators of a layer touch disjoint
// wires, so one layer is one batched secure compare-exchange (a constant
// number of rounds whatever its width). Comparator (i, j) has i < j and puts
// the minimum on wire i.
#pragma once
#include <cstdint>
#include <vector>

namespace pgk {

struct Comparator {
  int32_t i, j;
};
using Network = std::vector<std::vector<Comparator>>;

// Batcher's odd-even merge sort on n wires (any n >= 0): the network for the
// next power of two with every comparator that touches a wire >= n removed
// (those wires would hold +inf, which no comparator moves). Depth
// t (t + 1) / 2 for t = ceil(log2 n); about n t^2 / 4 comparators.
Network oddeven_merge_sort(int n);

// Keeps only the comparators that can influence the output wires `outputs`
// (a selection network: e.g. the median needs 1 or 2 of n outputs), and drops
// layers left empty. Works backwards: a comparator matters if either of its
// outputs does, and then both its inputs do.
Network prune_network(const Network& net, int n, const std::vector<int>& outputs);

int64_t network_size(const Network& net);

}  // namespace pgk
