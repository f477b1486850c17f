// A heap-free vsnprintf for the firmware's logs and TFLM's DebugVsnprintf.
//
// newlib-nano's vsnprintf links _malloc_r (its string streams can grow and
// its float conversion allocates), which would put an allocator into a
// firmware that promises none. TFLM's MicroVsnprintf only forwards to the
// DebugVsnprintf seam, so the firmware brings its own formatter.
#ifndef HIL_FORMAT_H_
#define HIL_FORMAT_H_

#include <cstdarg>
#include <cstddef>

namespace hil {

// C99 vsnprintf semantics: writes at most `size` bytes including the
// terminating NUL (none when `size` is 0) and returns the length the whole
// text would have, or -1 for a conversion it does not know.
//
// Conversions: d i u o x X c s p f F e E g G %; flags - + space # 0; width
// and precision as numbers or *; length modifiers hh h l ll z t j. Floats
// are printed from double arithmetic: exact to about 15 significant digits,
// %f of 1e19 and more prints in %e style, a NaN has no sign -- enough for
// logs, not a replacement for a libc printf.
int FormatV(char* buffer, size_t size, const char* format, va_list args);
int Format(char* buffer, size_t size, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace hil

#endif  // HIL_FORMAT_H_
