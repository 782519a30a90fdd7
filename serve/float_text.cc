/*
 * The C face of double-conversion's shortest round-trip formatting (serve/float_text.h). Built
 * without exceptions or RTTI (meson.build), and uses nothing of the C++ runtime: no allocation,
 * no static objects, so the object links into C programs with -ldouble-conversion alone.
 */
#include "float_text.h"

#include <double-conversion/double-to-string.h>

#include <cmath>
#include <cstring>

namespace {

using double_conversion::DoubleToStringConverter;
using double_conversion::StringBuilder;

/* Write the text of V into BUF[CAP], CAP >= SV_FLOAT_TEXT_MAX; V finite. Decimal form for
 * decimal exponents from -4 up to 8 (float) or 16 (double): the range printf's %g picks with 9
 * or 17 digits, so the text is never longer than %g's. No '+' in exponents and no trailing
 * '.': both stay valid JSON and shorter. The converter only holds these settings (building one
 * is a few stores), so each call makes its own and there is no shared state to initialise. */
size_t format(double v, int is_f32, char *buf, int cap)
{
    const DoubleToStringConverter conv(DoubleToStringConverter::NO_FLAGS, nullptr, nullptr, 'e',
                                       -4, is_f32 ? 9 : 17, 0, 0);
    StringBuilder sb(buf, cap);
    if (is_f32)
        conv.ToShortestSingle(static_cast<float>(v), &sb);
    else
        conv.ToShortest(v, &sb);
    int n = sb.position();
    sb.Finalize();
    return static_cast<size_t>(n);
}

} // namespace

extern "C" size_t sv_float_text(double v, int is_f32, char *buf, size_t cap)
{
    if (!std::isfinite(is_f32 ? static_cast<double>(static_cast<float>(v)) : v)) {
        /* JSON has no NaN or infinity. */
        if (cap < sizeof "null") {
            if (cap)
                buf[0] = '\0';
            return 0;
        }
        std::memcpy(buf, "null", sizeof "null");
        return 4;
    }
    if (cap >= SV_FLOAT_TEXT_MAX)
        return format(v, is_f32, buf, SV_FLOAT_TEXT_MAX);
    /* The library checks its buffer only with assert(): write where it always fits. */
    char tmp[SV_FLOAT_TEXT_MAX];
    size_t n = format(v, is_f32, tmp, SV_FLOAT_TEXT_MAX);
    if (n >= cap) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    std::memcpy(buf, tmp, n + 1);
    return n;
}
