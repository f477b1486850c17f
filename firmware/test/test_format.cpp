// hil::Format against the C library's snprintf: every case must give the
// same text and the same return value (tests/test_firmware_format.py).
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "hil_format.h"

namespace {

int g_failures = 0;

#define SAME(...)                                                            \
  do {                                                                       \
    char ours[128];                                                          \
    char theirs[128];                                                        \
    const int n = hil::Format(ours, sizeof(ours), __VA_ARGS__);              \
    const int m = snprintf(theirs, sizeof(theirs), __VA_ARGS__);             \
    if (n != m || std::strcmp(ours, theirs) != 0) {                          \
      std::printf("FAIL %s: [%s] %d, libc [%s] %d\n", #__VA_ARGS__, ours, n, \
                  theirs, m);                                                \
      ++g_failures;                                                          \
    }                                                                        \
  } while (0)

void Expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    ++g_failures;
  }
}

}  // namespace

int main() {
  SAME("%d %i %u %x %X %o", -42, 7, 3000000000u, 0xbeef, 0xbeef, 8);
  SAME("%5d|%-5d|%05d|%+d|% d|%.3d|%.0d|%8.3d", 42, 42, -42, 5, 5, 7, 0, -7);
  SAME("%#x %#o %#X %#o", 255, 8, 0, 0);
  SAME("%ld %lu %lld %llu %zu %hd %hhu", -5L, 5UL, -1234567890123LL,
       18446744073709551615ULL, (size_t)99, (short)-3, (unsigned char)250);
  SAME("%s|%10s|%-10s|%.2s|%c|%3c", "abc", "abc", "abc", "abc", 'x', 'y');
  SAME("%p", (void*)0x1234);
  SAME("%f %f %f %.2f %.0f %#.0f", 3.14159, -0.5, 0.0, 2.675, 2.5, 3.0);
  SAME("%10.3f|%-10.3f|%010.3f|%+f", 3.14159, 3.14159, -3.14159, 1.0);
  SAME("%e %E %.2e %e %e", 12345.678, 0.000123, 9.999, 0.0, 1e-300);
  SAME("%g %g %g %g %g %g %G", 100000.0, 1000000.0, 0.0001, 0.00001, 3.14159,
       0.0, 1e20);
  SAME("%g %g %.3g %#g %g", 1.5, 123456789.0, 3.14159, 1.0, 0.1);
  SAME("%f %e %.15f", 1e18, 1e20, 0.1);
  SAME("%%|%*d|%-*d|%.*f", 5, 1, 5, 2, 2, 1.23456);
  SAME("%f %F %f", 1.0 / 0.0, -1.0 / 0.0, __builtin_nan(""));
  SAME("%.10f %.12f", 0.1234567891234, 1.0 / 3);
  SAME("%f %e %.15f", 1e18, 1e20, 0.1);
  char small[4];
  Expect(hil::Format(small, sizeof(small), "%s", "abcdef") == 6 &&
             std::strcmp(small, "abc") == 0,
         "truncation keeps the NUL and returns the full length");
  Expect(hil::Format(nullptr, 0, "%d", 12345) == 5, "size 0 writes nothing");
  Expect(hil::Format(small, sizeof(small), "%q") == -1, "unknown conversion");
  std::printf("%d failures\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
