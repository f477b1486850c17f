// The firmware's heap-free formatter (see hil_format.h).
#include "hil_format.h"

#include <cstddef>
#include <cstdint>

namespace hil {

namespace {

// Longest converted body: 20 integer digits (uint64), '.', kMaxFraction
// digits, an exponent ("e-308").
constexpr int kMaxFraction = 40;
constexpr int kBodySize = 20 + 1 + kMaxFraction + 6 + 1;

// The destination: counts every byte, stores those that fit.
class Out {
 public:
  Out(char* buffer, size_t size) : buffer_(buffer), size_(size) {}
  void Put(char c) {
    if (length_ + 1 < size_) buffer_[length_] = c;
    ++length_;
  }
  void Put(const char* text, int n) {
    for (int i = 0; i < n; ++i) Put(text[i]);
  }
  void Repeat(char c, int n) {
    for (; n > 0; --n) Put(c);
  }
  int Finish() {
    if (size_ > 0) buffer_[length_ < size_ ? length_ : size_ - 1] = '\0';
    return static_cast<int>(length_);
  }

 private:
  char* buffer_;
  size_t size_;
  size_t length_ = 0;
};

struct Spec {
  bool left = false;
  bool plus = false;
  bool space = false;
  bool alt = false;
  bool zero = false;
  int width = 0;
  int precision = -1;  // none given
};

int Length(const char* text) {
  int n = 0;
  while (text[n] != '\0') ++n;
  return n;
}

// prefix (sign, "0x"), `zeros` leading zeros, then the body, padded to the
// field width.
void Field(Out& out, const Spec& spec, const char* prefix, const char* body,
           int body_length, int zeros, bool zero_pad_allowed) {
  const int prefix_length = Length(prefix);
  int pad = spec.width - (prefix_length + zeros + body_length);
  if (pad < 0) pad = 0;
  if (!spec.left && spec.zero && zero_pad_allowed) {
    zeros += pad;
    pad = 0;
  }
  if (!spec.left) out.Repeat(' ', pad);
  out.Put(prefix, prefix_length);
  out.Repeat('0', zeros);
  out.Put(body, body_length);
  if (spec.left) out.Repeat(' ', pad);
}

// Digits of `value` in `base`, most significant first; returns the count.
int Digits(uint64_t value, unsigned base, bool upper, char* digits) {
  const char* symbols = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char reversed[24];
  int n = 0;
  do {
    reversed[n++] = symbols[value % base];
    value /= base;
  } while (value != 0);
  for (int i = 0; i < n; ++i) digits[i] = reversed[n - 1 - i];
  return n;
}

void FormatInteger(Out& out, const Spec& spec, char conversion,
                   uint64_t magnitude, bool negative) {
  const bool is_signed = conversion == 'd' || conversion == 'i';
  const unsigned base =
      (conversion == 'x' || conversion == 'X' || conversion == 'p')
          ? 16
          : (conversion == 'o' ? 8 : 10);
  char body[24];
  int n = Digits(magnitude, base, conversion == 'X', body);
  if (spec.precision == 0 && magnitude == 0) n = 0;  // "%.0d" of 0 is empty
  int zeros = spec.precision > n ? spec.precision - n : 0;
  const char* prefix = "";
  if (is_signed) {
    prefix = negative ? "-" : (spec.plus ? "+" : (spec.space ? " " : ""));
  } else if (conversion == 'p' || (spec.alt && magnitude != 0 &&
                                   (conversion == 'x' || conversion == 'X'))) {
    prefix = conversion == 'X' ? "0X" : "0x";
  } else if (spec.alt && conversion == 'o' && zeros == 0 &&
             (n == 0 || body[0] != '0')) {
    zeros = 1;
  }
  Field(out, spec, prefix, body, n, zeros, spec.precision < 0);
}

// Fixed-point digits of `value` (>= 0, < 1e19) with `precision` fraction
// digits, rounded to nearest (ties to even, as glibc); returns the count and
// the integer part printed.
int Fixed(double value, int precision, bool point, char* body,
          uint64_t* integer_part) {
  uint64_t integer = static_cast<uint64_t>(value);
  double fraction = value - static_cast<double>(integer);
  char fraction_digits[kMaxFraction];
  for (int i = 0; i < precision; ++i) {
    fraction *= 10.0;
    int digit = static_cast<int>(fraction);
    if (digit > 9) digit = 9;
    fraction_digits[i] = static_cast<char>('0' + digit);
    fraction -= digit;
  }
  const bool last_odd = precision > 0
                            ? ((fraction_digits[precision - 1] - '0') & 1) != 0
                            : (integer & 1u) != 0;
  if (fraction > 0.5 || (fraction == 0.5 && last_odd)) {
    int i = precision - 1;
    while (i >= 0 && fraction_digits[i] == '9') fraction_digits[i--] = '0';
    if (i >= 0) {
      ++fraction_digits[i];
    } else {
      ++integer;
    }
  }
  int n = Digits(integer, 10, false, body);
  if (precision > 0 || point) body[n++] = '.';
  for (int i = 0; i < precision; ++i) body[n++] = fraction_digits[i];
  *integer_part = integer;
  return n;
}

// `value` (> 0) as mantissa in [1, 10) and decimal exponent.
double Normalize(double value, int* exponent) {
  int e = 0;
  // Bounded: a finite double has a decimal exponent within +-324.
  while (value >= 10.0 && e < 400) {
    value /= 10.0;
    ++e;
  }
  while (value < 1.0 && e > -400) {
    value *= 10.0;
    --e;
  }
  *exponent = e;
  return value;
}

// d.ddde+XX; returns the count and the exponent printed.
int Exponential(double value, int precision, bool point, bool upper, char* body,
                int* exponent_out) {
  int exponent = 0;
  double mantissa = value == 0.0 ? 0.0 : Normalize(value, &exponent);
  uint64_t integer = 0;
  int n = Fixed(mantissa, precision, point, body, &integer);
  if (integer >= 10) {  // rounding carried into a new digit: 9.99 -> 10.0
    ++exponent;
    n = Fixed(mantissa / 10.0, precision, point, body, &integer);
  }
  body[n++] = upper ? 'E' : 'e';
  body[n++] = exponent < 0 ? '-' : '+';
  const int magnitude = exponent < 0 ? -exponent : exponent;
  if (magnitude < 10) body[n++] = '0';
  n += Digits(static_cast<uint64_t>(magnitude), 10, false, body + n);
  *exponent_out = exponent;
  return n;
}

// %g: drops trailing zeros of the fraction (and a lone '.') unless '#'.
int TrimFraction(char* body, int n, char exponent_letter) {
  int end = 0;
  while (end < n && body[end] != exponent_letter) ++end;
  int dot = 0;
  while (dot < end && body[dot] != '.') ++dot;
  if (dot == end) return n;
  int keep = end;
  while (keep > dot + 1 && body[keep - 1] == '0') --keep;
  if (keep == dot + 1) keep = dot;
  for (int i = end; i < n; ++i) body[keep + i - end] = body[i];
  return keep + (n - end);
}

void FormatFloat(Out& out, const Spec& spec, char conversion, double value) {
  const bool upper = conversion >= 'A' && conversion <= 'Z';
  const bool negative = value < 0.0;
  if (negative) value = -value;
  const char* prefix =
      negative ? "-" : (spec.plus ? "+" : (spec.space ? " " : ""));
  char body[kBodySize];
  if (value != value || value > 1.7976931348623157e308) {
    const char* text =
        value != value ? (upper ? "NAN" : "nan") : (upper ? "INF" : "inf");
    Field(out, spec, prefix, text, 3, 0, false);
    return;
  }
  int precision = spec.precision < 0 ? 6 : spec.precision;
  if (precision > kMaxFraction) precision = kMaxFraction;
  const char lower = static_cast<char>(upper ? conversion + 32 : conversion);
  int n = 0;
  int exponent = 0;
  uint64_t integer = 0;
  if (lower == 'f' && value < 1e19) {
    n = Fixed(value, precision, spec.alt, body, &integer);
  } else if (lower == 'f' || lower == 'e') {
    n = Exponential(value, precision, spec.alt, upper, body, &exponent);
  } else {  // 'g': the style depends on the exponent after rounding
    const int significant = precision == 0 ? 1 : precision;
    Exponential(value, significant - 1, false, upper, body, &exponent);
    if (exponent >= -4 && exponent < significant && value < 1e19) {
      n = Fixed(value, significant - 1 - exponent, spec.alt, body, &integer);
    } else {
      n = Exponential(value, significant - 1, spec.alt, upper, body, &exponent);
    }
    if (!spec.alt) n = TrimFraction(body, n, upper ? 'E' : 'e');
  }
  Field(out, spec, prefix, body, n, 0, true);
}

const char* ParseSpec(const char* p, va_list& args, Spec* spec) {
  for (;; ++p) {
    if (*p == '-') {
      spec->left = true;
    } else if (*p == '+') {
      spec->plus = true;
    } else if (*p == ' ') {
      spec->space = true;
    } else if (*p == '#') {
      spec->alt = true;
    } else if (*p == '0') {
      spec->zero = true;
    } else {
      break;
    }
  }
  if (*p == '*') {
    spec->width = va_arg(args, int);
    if (spec->width < 0) {
      spec->left = true;
      spec->width = -spec->width;
    }
    ++p;
  } else {
    while (*p >= '0' && *p <= '9')
      spec->width = spec->width * 10 + (*p++ - '0');
  }
  if (*p == '.') {
    ++p;
    spec->precision = 0;
    if (*p == '*') {
      spec->precision = va_arg(args, int);
      if (spec->precision < 0) spec->precision = -1;  // as if none
      ++p;
    } else {
      while (*p >= '0' && *p <= '9') {
        spec->precision = spec->precision * 10 + (*p++ - '0');
      }
    }
  }
  return p;
}

// The integer argument for length modifier `length` ('H' hh, 'h', 'l',
// 'L' ll, 'z', 't', 'j', 0 none).
int64_t SignedArgument(va_list& args, char length) {
  switch (length) {
    case 'l':
      return va_arg(args, long);
    case 'L':
      return va_arg(args, long long);
    case 'z':
    case 't':
      return va_arg(args, ptrdiff_t);
    case 'j':
      return va_arg(args, intmax_t);
    case 'H':
      return static_cast<signed char>(va_arg(args, int));
    case 'h':
      return static_cast<short>(va_arg(args, int));
    default:
      return va_arg(args, int);
  }
}

uint64_t UnsignedArgument(va_list& args, char length) {
  switch (length) {
    case 'l':
      return va_arg(args, unsigned long);
    case 'L':
      return va_arg(args, unsigned long long);
    case 'z':
    case 't':
      return va_arg(args, size_t);
    case 'j':
      return va_arg(args, uintmax_t);
    case 'H':
      return static_cast<unsigned char>(va_arg(args, unsigned int));
    case 'h':
      return static_cast<unsigned short>(va_arg(args, unsigned int));
    default:
      return va_arg(args, unsigned int);
  }
}

const char* ParseLength(const char* p, char* length) {
  *length = 0;
  if (p[0] == 'h' && p[1] == 'h') {
    *length = 'H';
    return p + 2;
  }
  if (p[0] == 'l' && p[1] == 'l') {
    *length = 'L';
    return p + 2;
  }
  if (*p == 'h' || *p == 'l' || *p == 'z' || *p == 't' || *p == 'j') {
    *length = *p;
    return p + 1;
  }
  return p;
}

// Appends one conversion; false for one it does not know.
bool Convert(Out& out, const Spec& spec, char length, char conversion,
             va_list& args) {
  switch (conversion) {
    case 'd':
    case 'i':
    case 'u':
    case 'o':
    case 'x':
    case 'X': {
      if (conversion == 'd' || conversion == 'i') {
        const int64_t value = SignedArgument(args, length);
        const uint64_t magnitude = value < 0 ? 0u - static_cast<uint64_t>(value)
                                             : static_cast<uint64_t>(value);
        FormatInteger(out, spec, conversion, magnitude, value < 0);
      } else {
        FormatInteger(out, spec, conversion, UnsignedArgument(args, length),
                      false);
      }
      return true;
    }
    case 'p':
      FormatInteger(out, spec, 'p',
                    reinterpret_cast<uintptr_t>(va_arg(args, void*)), false);
      return true;
    case 'c': {
      const char c = static_cast<char>(va_arg(args, int));
      Field(out, spec, "", &c, 1, 0, false);
      return true;
    }
    case 's': {
      const char* text = va_arg(args, const char*);
      if (text == nullptr) text = "(null)";
      int n = 0;
      while (text[n] != '\0' && (spec.precision < 0 || n < spec.precision)) {
        ++n;
      }
      Field(out, spec, "", text, n, 0, false);
      return true;
    }
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G':
      FormatFloat(out, spec, conversion, va_arg(args, double));
      return true;
    case '%':
      out.Put('%');
      return true;
    default:
      return false;
  }
}

}  // namespace

int FormatV(char* buffer, size_t size, const char* format, va_list args) {
  Out out(buffer, size);
  // A copy: va_list may be an array type, and the helpers take it by
  // reference so that each va_arg advances the one list.
  va_list list;
  va_copy(list, args);
  for (const char* p = format; *p != '\0'; ++p) {
    if (*p != '%') {
      out.Put(*p);
      continue;
    }
    Spec spec;
    char length = 0;
    p = ParseLength(ParseSpec(p + 1, list, &spec), &length);
    if (*p == '\0' || !Convert(out, spec, length, *p, list)) {
      va_end(list);
      out.Finish();
      return -1;
    }
  }
  va_end(list);
  return out.Finish();
}

int Format(char* buffer, size_t size, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int n = FormatV(buffer, size, format, args);
  va_end(args);
  return n;
}

}  // namespace hil
