// DiffAugment's default policy (colour, translation, cutout) and its gradient as two CPU passes per image, and
// the dihedral flips as one copy (issue 20); built and loaded by satgan/augment_kernel.py, which documents the
// maths and the arguments.
//
// Layout: (N, C, H, W) float32 or bfloat16, dense in NCHW or in NHWC (channels_last) order; the output has the
// input's layout. bf16 is read exactly and written round-to-nearest-even, as torch does; the arithmetic is
// float32. Per image n: brightness beta[n], saturation sigma[n], contrast kappa[n] (the factor minus 1, zero
// where the op was not drawn), shift (dy[n], dx[n]) and a cutout square of ch x cw at (cy[n], cx[n]) where
// cut[n]. Plain loops over a row that the compiler vectorises, without fast-math; the images are split between
// `threads` OpenMP threads (torch's own pool: see split), each image computed whole by one thread, so the same
// input gives the same bits on every run and for every thread count.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline float load(float v) { return v; }
inline float load(uint16_t v) {
    uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline void store(float* p, float f) { *p = f; }
inline void store(uint16_t* p, float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    // a NaN stays a (quiet) NaN; otherwise round to nearest, ties to even
    *p = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((u >> 16) | 0x40u)
                                          : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

struct Draws {
    const float *beta, *sigma, *kappa;
    const int32_t *dy, *dx, *cy, *cx, *cut;
    int ch, cw;
};

// Element (c, j) of image row r, in either layout: NCHW (channel planes H * W apart) or NHWC (pixels of C
// interleaved). CC > 0: C known when compiled (3: RGB), so the channel loops unroll and the loops over j vectorise.
template <bool NHWC, int CC>
struct Layout {
    int C_, H, W;
    int C() const { return CC > 0 ? CC : C_; }
    std::ptrdiff_t row(int r) const { return static_cast<std::ptrdiff_t>(r) * W * (NHWC ? C() : 1); }
    std::ptrdiff_t at(int c, int j) const {
        return NHWC ? static_cast<std::ptrdiff_t>(j) * C() + c : static_cast<std::ptrdiff_t>(c) * H * W + j;
    }
};

// The sum of p[0, n) in 16 float lanes, then in double.
template <class T>
double sum_range(const T* __restrict__ p, std::size_t n) {
    constexpr int L = 16;
    float lanes[L] = {};
    std::size_t q = 0;
    for (; q + L <= n; q += L)
        for (int l = 0; l < L; ++l) lanes[l] += load(p[q + l]);
    double total = 0.0;
    for (; q < n; ++q) total += load(p[q]);
    for (int l = 0; l < L; ++l) total += lanes[l];
    return total;
}

// the columns j of output row i that cutout zeroes: [lo, hi), empty (lo = hi = 0) when none
inline void cut_span(const Draws& d, int n, int i, int W, int* lo, int* hi) {
    *lo = *hi = 0;
    if (!d.cut[n] || i < d.cy[n] || i >= d.cy[n] + d.ch) return;
    *lo = d.cx[n] < 0 ? 0 : d.cx[n];
    *hi = d.cx[n] + d.cw > W ? W : d.cx[n] + d.cw;
    if (*hi < *lo) *hi = *lo;
}

// Set the columns [a, b) of a row (every channel) to value.
template <class T, bool NHWC, int CC>
void fill(const Layout<NHWC, CC>& L, T* __restrict__ row, int a, int b, float value) {
    for (int c = 0; c < L.C(); ++c)
        for (int j = a; j < b; ++j) store(row + L.at(c, j), value);
}

// n elements from one type to another (bf16 <-> float): a contiguous loop that vectorises.
template <class S, class D>
void convert(const S* __restrict__ src, D* __restrict__ dst, int n) {
    for (int q = 0; q < n; ++q) store(dst + q, load(src[q]));
}

// bf16 in NHWC: a row is converted to float whole and back, as interleaved 3-channel bf16 loads and stores do
// not vectorise (~1.6x slower); everything else is read and written in place.
template <class T, bool NHWC>
constexpr bool staged = NHWC && std::is_same_v<T, uint16_t>;

// row(in, dst) on image row `in` (C * W elements) writing image row `out`: in place, or through the float buffers
// `in_row` and `out_row` where the layout is staged.
template <bool NHWC, class T, class F>
void through_row(const T* in, T* out, std::vector<float>& in_row, std::vector<float>& out_row, F row) {
    if constexpr (staged<T, NHWC>) {
        const int n = static_cast<int>(in_row.size());
        convert(in, in_row.data(), n);
        row(static_cast<const float*>(in_row.data()), out_row.data());
        convert(out_row.data(), out, n);
    } else {
        row(in, out);
    }
}

// f(std::bool_constant<value>{}): a run-time flag as a compile-time one
template <class F>
void with_flag(bool value, F f) {
    if (value)
        f(std::true_type{});
    else
        f(std::false_type{});
}

// f(std::integral_constant<int, CC>{}) with CC = 3 (RGB: the channel loops unroll) or 0 (C known at run time)
template <class F>
void with_channels(int C, F f) {
    if (C == 3)
        f(std::integral_constant<int, 3>{});
    else
        f(std::integral_constant<int, 0>{});
}

// Forward output columns [j0, j1) of one row from its source row src, whose column j - dx is output column j's
// source. b: C scratch floats where C is not known when compiled; with CC the channels stay in registers and the
// loop over j vectorises.
template <class S, class D, bool NHWC, int CC>
void forward_row(const Layout<NHWC, CC>& L, const S* __restrict__ src, int dx, D* __restrict__ o, int j0, int j1,
                 float beta, float sigma, float kappa, float m, float* __restrict__ b) {
    const int C = L.C();
    const float inv_c = 1.0f / static_cast<float>(C);
    for (int j = j0; j < j1; ++j) {
        float local[CC > 0 ? CC : 1];
        float* __restrict__ bj = CC > 0 ? local : b;
        float mean = 0.0f;
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) {
            bj[c] = load(src[L.at(c, j - dx)]) + beta;
            mean += bj[c];
        }
        mean *= inv_c;
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) {
            const float s = bj[c] + (bj[c] - mean) * sigma;
            store(o + L.at(c, j), s + (s - m) * kappa);
        }
    }
}

// Gradient source columns [a, b) of one row from the output row src that it went to, at column j + dx.
template <class S, class D, bool NHWC, int CC>
void backward_row(const Layout<NHWC, CC>& L, const S* __restrict__ src, int dx, D* __restrict__ o, int a, int b,
                  float kappa, float sigma, float shift, float* __restrict__ gs) {
    const int C = L.C();
    const float inv_c = 1.0f / static_cast<float>(C);
    for (int j = a; j < b; ++j) {
        float local[CC > 0 ? CC : 1];
        float* __restrict__ gj = CC > 0 ? local : gs;
        float mean = 0.0f;
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) {
            gj[c] = (1.0f + kappa) * load(src[L.at(c, j + dx)]) - shift;
            mean += gj[c];
        }
        mean *= inv_c;
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) store(o + L.at(c, j), (1.0f + sigma) * gj[c] - sigma * mean);
    }
}

// The forward, per image: contrast's mean (brightness and saturation keep an image's mean but for
// brightness's offset: mean(s) = mean(x) + beta), then each output row i from source row i - dy: brightness,
// saturation and contrast of the source pixel dx columns left, zero where that is off the image, cutout's span
// zeroed. One read and one write of each element, its channels in registers.
template <class T, bool NHWC, int CC>
void forward(const T* x, T* out, int N, int C_, int H, int W, const Draws& d) {
    const Layout<NHWC, CC> L{C_, H, W};
    const int C = L.C();
    const std::size_t image = static_cast<std::size_t>(C) * H * W;
    std::vector<float> b(C);  // C unknown when compiled (CC = 0) needs a buffer
    std::vector<float> in_row(staged<T, NHWC> ? C * W : 0), out_row(staged<T, NHWC> ? C * W : 0);
    for (int n = 0; n < N; ++n) {
        const T* xn = x + n * image;
        T* on = out + n * image;
        const float beta = d.beta[n], sigma = d.sigma[n], kappa = d.kappa[n];
        const float m = static_cast<float>(sum_range(xn, image) / static_cast<double>(image)) + beta;
        const int dx = d.dx[n];
        const int j0 = dx > 0 ? dx : 0, j1 = dx < 0 ? W + dx : W;  // output columns whose source is in view
        for (int i = 0; i < H; ++i) {
            T* o = on + L.row(i);
            const int r = i - d.dy[n];
            if (r < 0 || r >= H) {
                fill(L, o, 0, W, 0.0f);
                continue;
            }
            int lo, hi;
            cut_span(d, n, i, W, &lo, &hi);
            auto row = [&](const auto* in, auto* dst) {  // in: source row r; dst: output row i
                fill(L, dst, 0, j0, 0.0f);
                forward_row(L, in, dx, dst, j0, j1, beta, sigma, kappa, m, b.data());
                fill(L, dst, j1, W, 0.0f);
                fill(L, dst, lo, hi, 0.0f);
            };
            through_row<NHWC>(xn + L.row(r), o, in_row, out_row, row);
        }
    }
}

// The gradient: cutout's mask, the shift back, then the transposes of contrast and saturation (brightness adds
// a constant): g_s = (1 + kappa) g_k - kappa * mean(g_k); g_x[c] = (1 + sigma) g_s[c] - sigma * mean_c g_s.
// Two passes per image: the sum of g_k (g over the output pixels whose source is in view, not cut), then each
// source row r from output row r + dy; where no gradient lands (g_k = 0), g_x = -kappa * mean(g_k) in every channel.
template <class T, bool NHWC, int CC>
void backward(const T* g, T* gx, int N, int C_, int H, int W, const Draws& d) {
    const Layout<NHWC, CC> L{C_, H, W};
    const int C = L.C();
    const std::size_t image = static_cast<std::size_t>(C) * H * W;
    std::vector<float> gs(C);  // C unknown when compiled (CC = 0) needs a buffer
    std::vector<float> in_row(staged<T, NHWC> ? C * W : 0), out_row(staged<T, NHWC> ? C * W : 0);
    for (int n = 0; n < N; ++n) {
        const T* gn = g + n * image;
        T* on = gx + n * image;
        const int dy = d.dy[n], dx = d.dx[n];
        const float kappa = d.kappa[n], sigma = d.sigma[n];
        const int j0 = dx > 0 ? dx : 0, j1 = dx < 0 ? W + dx : W;  // output columns whose source is in view
        // the output columns of row i whose gradient lands: [j0, j1) less cutout's span, as up to two ranges
        auto landing = [&](int i, int* spans) {
            int lo, hi;
            cut_span(d, n, i, W, &lo, &hi);
            auto clamp = [&](int j) { return j < j0 ? j0 : j > j1 ? j1 : j; };
            spans[0] = j0;  // [j0, lo) and [hi, j1), clamped (no cut: lo = hi = 0, so [j0, j0) and [j0, j1))
            spans[1] = clamp(lo);
            spans[2] = clamp(hi);
            spans[3] = j1;
        };
        double total = 0.0;
        for (int i = (dy > 0 ? dy : 0); i < (dy < 0 ? H + dy : H); ++i) {
            int spans[4];
            landing(i, spans);
            const T* row = gn + L.row(i);
            for (int k = 0; k < 4; k += 2) {
                if (spans[k + 1] <= spans[k]) continue;
                if (NHWC) {
                    total += sum_range(row + L.at(0, spans[k]), static_cast<std::size_t>(spans[k + 1] - spans[k]) * C);
                } else {
                    for (int c = 0; c < C; ++c)
                        total += sum_range(row + L.at(c, spans[k]), static_cast<std::size_t>(spans[k + 1] - spans[k]));
                }
            }
        }
        const float shift = kappa * static_cast<float>(total / static_cast<double>(image));
        for (int r = 0; r < H; ++r) {
            T* o = on + L.row(r);
            const int i = r + dy;
            if (i < 0 || i >= H) {
                fill(L, o, 0, W, -shift);
                continue;
            }
            int spans[4];
            landing(i, spans);
            auto row = [&](const auto* in, auto* dst) {  // in: g's output row i; dst: the gradient's row r
                fill(L, dst, 0, W, -shift);
                for (int k = 0; k < 4; k += 2)
                    backward_row(L, in, dx, dst, spans[k] - dx, spans[k + 1] - dx, kappa, sigma, shift, gs.data());
            };
            through_row<NHWC>(gn + L.row(i), o, in_row, out_row, row);
        }
    }
}

// Dihedral flips and rotations (satgan.train.hacks.dihedral_augment) as a copy: output pixel p = i * W + j of
// image n is input pixel base[n] + i * si[n] + j * sj[n] (every element of D4 is such an affine map of a square
// image), every channel; input and output each NCHW or NHWC. E: the element's bits (2 or 4 bytes), copied as is.
template <class E, bool IN_NHWC, bool OUT_NHWC, int CC>
void dihedral(const E* x, E* out, int N, int C_, int H, int W, const int32_t* base, const int32_t* si,
              const int32_t* sj) {
    const int C = CC > 0 ? CC : C_;
    const std::ptrdiff_t HW = static_cast<std::ptrdiff_t>(H) * W;
    for (int n = 0; n < N; ++n) {
        const E* __restrict__ xn = x + n * C * HW;
        E* __restrict__ on = out + n * C * HW;
        for (int i = 0; i < H; ++i) {
            const std::ptrdiff_t row = base[n] + static_cast<std::ptrdiff_t>(i) * si[n], step = sj[n];
            for (int j = 0; j < W; ++j) {
                const std::ptrdiff_t p = static_cast<std::ptrdiff_t>(i) * W + j, q = row + j * step;
#pragma GCC unroll 4
                for (int c = 0; c < C; ++c) on[OUT_NHWC ? p * C + c : c * HW + p] = xn[IN_NHWC ? q * C + c : c * HW + q];
            }
        }
    }
}

template <class E>
void dihedral_any(const E* x, E* out, int in_nhwc, int out_nhwc, int N, int C, int H, int W, const int32_t* base,
                  const int32_t* si, const int32_t* sj) {
    with_flag(in_nhwc, [&](auto in_tag) {
        with_flag(out_nhwc, [&](auto out_tag) {
            with_channels(C, [&](auto cc) {
                dihedral<E, decltype(in_tag)::value, decltype(out_tag)::value, decltype(cc)::value>(x, out, N, C, H, W,
                                                                                                 base, si, sj);
            });
        });
    });
}

// the forward or the gradient, dispatched on the layout and on C == 3
template <class T, bool FORWARD>
void run(const T* in, T* out, int nhwc, int N, int C, int H, int W, const Draws& d) {
    with_flag(nhwc, [&](auto nhwc_tag) {
        with_channels(C, [&](auto cc) {
            constexpr bool L = decltype(nhwc_tag)::value;
            constexpr int CC = decltype(cc)::value;
            if constexpr (FORWARD)
                forward<T, L, CC>(in, out, N, C, H, W, d);
            else
                backward<T, L, CC>(in, out, N, C, H, W, d);
        });
    });
}

// f(n0, n1) over the images [0, N) split into `threads` contiguous ranges, one per OpenMP thread. Built with
// -fopenmp, this library names libgomp.so.1, which the dynamic loader resolves to the one torch has already loaded
// (torch's wheels ship theirs under that name), so these are torch's own pool threads, with its wait policy
// (satgan.openmp): a thread of another runtime would compete with torch's spinning worker for the core, which is
// why a std::thread split made the step slower. Each image is computed by one thread whatever the count, so the
// bits do not depend on it. Without OpenMP the pragma is ignored and one thread does all.
template <class F>
void split(int N, int threads, F f) {
    if (threads > N) threads = N;
    if (threads <= 1) {
        f(0, N);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int t = 0, T = 1;
#endif
        f(static_cast<int>(static_cast<long long>(N) * t / T), static_cast<int>(static_cast<long long>(N) * (t + 1) / T));
    }
}

// the draws of images [n0, ...)
Draws from(const Draws& d, int n0) {
    return Draws{d.beta + n0, d.sigma + n0, d.kappa + n0, d.dy + n0, d.dx + n0, d.cy + n0, d.cx + n0, d.cut + n0,
                 d.ch, d.cw};
}

template <class T, bool FORWARD>
void run_split(const T* in, T* out, int threads, int nhwc, int N, int C, int H, int W, const Draws& d) {
    const std::size_t image = static_cast<std::size_t>(C) * H * W;
    split(N, threads, [&](int n0, int n1) {
        run<T, FORWARD>(in + n0 * image, out + n0 * image, nhwc, n1 - n0, C, H, W, from(d, n0));
    });
}

template <class E>
void dihedral_split(const E* x, E* out, int threads, int in_nhwc, int out_nhwc, int N, int C, int H, int W,
                    const int32_t* base, const int32_t* si, const int32_t* sj) {
    const std::size_t image = static_cast<std::size_t>(C) * H * W;
    split(N, threads, [&](int n0, int n1) {
        dihedral_any<E>(x + n0 * image, out + n0 * image, in_nhwc, out_nhwc, n1 - n0, C, H, W, base + n0, si + n0,
                        sj + n0);
    });
}

}  // namespace

#define SATGAN_DA_ARGS                                                                                        \
    int threads, int nhwc, int N, int C, int H, int W, const float *beta, const float *sigma, const float *kappa, \
        const int32_t *dy, const int32_t *dx, const int32_t *cy, const int32_t *cx, const int32_t *cut, int ch,   \
        int cw
#define SATGAN_DA_DRAWS Draws{beta, sigma, kappa, dy, dx, cy, cx, cut, ch, cw}

extern "C" {
#define SATGAN_DIHEDRAL_ARGS                                                                                   \
    int threads, int in_nhwc, int out_nhwc, int N, int C, int H, int W, const int32_t *base, const int32_t *si, \
        const int32_t *sj
void satgan_dihedral_2(const uint16_t* x, uint16_t* out, SATGAN_DIHEDRAL_ARGS) {
    dihedral_split(x, out, threads, in_nhwc, out_nhwc, N, C, H, W, base, si, sj);
}
void satgan_dihedral_4(const uint32_t* x, uint32_t* out, SATGAN_DIHEDRAL_ARGS) {
    dihedral_split(x, out, threads, in_nhwc, out_nhwc, N, C, H, W, base, si, sj);
}
void satgan_da_forward_f32(const float* x, float* out, SATGAN_DA_ARGS) {
    run_split<float, true>(x, out, threads, nhwc, N, C, H, W, SATGAN_DA_DRAWS);
}
void satgan_da_forward_bf16(const uint16_t* x, uint16_t* out, SATGAN_DA_ARGS) {
    run_split<uint16_t, true>(x, out, threads, nhwc, N, C, H, W, SATGAN_DA_DRAWS);
}
void satgan_da_backward_f32(const float* g, float* gx, SATGAN_DA_ARGS) {
    run_split<float, false>(g, gx, threads, nhwc, N, C, H, W, SATGAN_DA_DRAWS);
}
void satgan_da_backward_bf16(const uint16_t* g, uint16_t* gx, SATGAN_DA_ARGS) {
    run_split<uint16_t, false>(g, gx, threads, nhwc, N, C, H, W, SATGAN_DA_DRAWS);
}
}
