// Minimal test harness shared by the C++ unit tests: CHECK counts, and the
// binary prints "<name> tests: N passed, M failed" and exits non-zero on failure.
#pragma once
#include <cstdio>

inline int g_pass = 0, g_fail = 0;

#define CHECK(cond, ...)                               \
  do {                                                 \
    if (cond) {                                        \
      ++g_pass;                                        \
    } else {                                           \
      ++g_fail;                                        \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
    }                                                  \
  } while (0)

inline int report(const char* name) {
  std::printf("%s tests: %d passed, %d failed\n", name, g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
