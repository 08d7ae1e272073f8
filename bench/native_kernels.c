/* What native code would buy the CPU kernels: the int8 cache's one-pass attention kernel and the int16 products' four-row
 * loop written in C and compiled by gcc, each as the service runs it (AVX-512BW byte pairs: vpmaddubsw then vpmaddwd; int16
 * pairs: vpmaddwd then vpaddd) and with AVX-512 VNNI (vpdpbusd, vpdpwssd), which this CPU may have but .NET 10 does not expose
 * (it has only AVX-VNNI's VEX form). bench/native_kernels.py builds and runs it beside the service's own kernel (the
 * worker's attend_blocks op) and prints the table; benchmarks/README.md, "What is left in a 16-client step" ("Native code
 * and AVX-512 VNNI").
 *     gcc -O2 -march=native -o /tmp/native_kernels bench/native_kernels.c -lm && /tmp/native_kernels
 * Prints one line per measurement: kernel, working set in MB, variant, ns per unit. Run it on an otherwise idle machine.
 *
 * The attention block is Int8Blocks.AttendBytePairs's, line for line (one head, a head size of 32, whole blocks of 16
 * positions): the byte-pair dot products, the online softmax in log2 units, the weights quantized by their largest pair sum,
 * and the weighted values. Its VNNI variant takes vpdpbusd for the products and quantizes the weights by their largest, as
 * Int8Blocks.AttendVnni does. Layout as the cache's: a block's 16 fp32 scales, then its bytes (keys: 8 groups of 64;
 * values: 4 groups of 128), 576 bytes a block of keys and as many of values. */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BLOCK_BYTES 576

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static inline __m512 exp2_finite(__m512 x) {
    __m512 n = _mm512_roundscale_ps(x, 0), f = _mm512_sub_ps(x, n), f2 = _mm512_mul_ps(f, f);
    __m512 low = _mm512_fmadd_ps(f, _mm512_set1_ps(0.693124235f), _mm512_set1_ps(1.f));
    __m512 high = _mm512_fmadd_ps(f, _mm512_set1_ps(0.0559063368f), _mm512_set1_ps(0.240240991f));
    high = _mm512_fmadd_ps(f2, _mm512_set1_ps(0.00958282314f), high);
    return _mm512_scalef_ps(_mm512_fmadd_ps(high, f2, low), n);
}

static inline __m512 exp2_non_positive(__m512 x) {
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(under, exp2_finite(_mm512_max_ps(x, _mm512_set1_ps(-126.f))), _mm512_setzero_ps());
}

static inline __m128 even_and_odd_max(__m512 v) {
    __m256 m = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    return _mm_max_ps(m4, _mm_permute_ps(m4, 0x4E));
}

static inline float max_of(__m512 v) { __m128 m2 = even_and_odd_max(v); return _mm_cvtss_f32(_mm_max_ps(m2, _mm_permute_ps(m2, 0xB1))); }

/* One key group (16 positions x 4 dimensions) dotted with 4 query bytes, added to acc. */
static inline __m512i key_group(__m512i acc, const unsigned char *k, __m512i q, int vnni) {
    if (vnni) return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(k), q);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_loadu_si512(k), q), _mm512_set1_epi16(1)));
}

/* One value group (4 positions x 16 dimensions) times its 4 positions' weight bytes, added to acc. */
static inline __m512i value_group(__m512i acc, const unsigned char *v, __m512i w, int vnni) {
    if (vnni) return _mm512_dpbusd_epi32(acc, w, _mm512_loadu_si512(v));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_loadu_si512(v)), _mm512_set1_epi16(1)));
}

static inline __m512i value_dimensions(const unsigned char *v, __m512i w0, __m512i w1, __m512i w2, __m512i w3, int vnni) {
    __m512i a = value_group(value_group(_mm512_setzero_si512(), v, w0, vnni), v + 128, w1, vnni);
    __m512i b = value_group(value_group(_mm512_setzero_si512(), v + 256, w2, vnni), v + 384, w3, vnni);
    return _mm512_add_epi32(a, b);
}

static inline __attribute__((always_inline)) float attend(const unsigned char *keys, const unsigned char *values, int blocks,
                                                         const int *query, float query_scale, int correction, float *acc, int vnni) {
    __m512 qs = _mm512_set1_ps(query_scale * 1.44269504f);
    __m512i corrections = _mm512_set1_epi32(correction);
    __m512 max = _mm512_set1_ps(-INFINITY), sums = _mm512_setzero_ps(), o0 = sums, o1 = sums;
    for (int b = 0; b < blocks; b++) {
        const unsigned char *kb = keys + (long)b * BLOCK_BYTES, *vb = values + (long)b * BLOCK_BYTES, *k = kb + 64;
        __m512i d0 = key_group(key_group(_mm512_setzero_si512(), k, _mm512_set1_epi32(query[0]), vnni), k + 64, _mm512_set1_epi32(query[1]), vnni);
        __m512i d1 = key_group(key_group(_mm512_setzero_si512(), k + 128, _mm512_set1_epi32(query[2]), vnni), k + 192, _mm512_set1_epi32(query[3]), vnni);
        __m512i d2 = key_group(key_group(_mm512_setzero_si512(), k + 256, _mm512_set1_epi32(query[4]), vnni), k + 320, _mm512_set1_epi32(query[5]), vnni);
        __m512i d3 = key_group(key_group(_mm512_setzero_si512(), k + 384, _mm512_set1_epi32(query[6]), vnni), k + 448, _mm512_set1_epi32(query[7]), vnni);
        __m512i sum = _mm512_add_epi32(_mm512_add_epi32(d0, d1), _mm512_add_epi32(d2, d3));
        __m512 dots = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, corrections));
        __m512 scales = _mm512_mul_ps(_mm512_loadu_ps((const float *)kb), qs);
        __m512 x = _mm512_fmsub_ps(dots, scales, max);
        if (_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ)) {
            __m512 risen = _mm512_max_ps(max, _mm512_set1_ps(max_of(_mm512_mul_ps(dots, scales))));
            __m512 r = exp2_non_positive(_mm512_sub_ps(max, risen));
            sums = _mm512_mul_ps(sums, r); o0 = _mm512_mul_ps(o0, r); o1 = _mm512_mul_ps(o1, r);
            max = risen;
            x = _mm512_fmsub_ps(dots, scales, max);
        }
        __m512 e = exp2_finite(x);
        sums = _mm512_add_ps(sums, e);
        __m512 value_scales = _mm512_loadu_ps((const float *)vb);
        __m512 w = _mm512_mul_ps(e, value_scales), w255 = _mm512_mul_ps(e, _mm512_mul_ps(value_scales, _mm512_set1_ps(255.f)));
        /* Byte pairs: quantized by the largest sum of two neighbours (no 16-bit sum saturates); VNNI: by the largest. */
        __m128 top = vnni ? _mm_set1_ps(max_of(w)) : even_and_odd_max(_mm512_add_ps(w, _mm512_shuffle_ps(w, w, 0xB1)));
        float unit = _mm_cvtss_f32(top) / 255.f;
        if (!(unit > 0)) continue;
        __m512i ints = _mm512_cvtps_epu32(_mm512_mul_ps(w255, _mm512_set1_ps(_mm_cvtss_f32(_mm_rcp14_ss(top, top)))));
        __m512i lanes = _mm512_shuffle_epi8(ints, _mm512_set1_epi32(0x0C080400));
        __m512i w0 = _mm512_shuffle_i32x4(lanes, lanes, 0x00), w1 = _mm512_shuffle_i32x4(lanes, lanes, 0x55);
        __m512i w2 = _mm512_shuffle_i32x4(lanes, lanes, 0xAA), w3 = _mm512_shuffle_i32x4(lanes, lanes, 0xFF);
        __m512 units = _mm512_set1_ps(unit);
        const unsigned char *v = vb + 64;
        o0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(value_dimensions(v, w0, w1, w2, w3, vnni)), units, o0);
        o1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(value_dimensions(v + 64, w0, w1, w2, w3, vnni)), units, o1);
    }
    _mm512_storeu_ps(acc, o0);
    _mm512_storeu_ps(acc + 16, o1);
    return _mm512_reduce_add_ps(sums);
}

__attribute__((noinline)) float attend_byte_pairs(const unsigned char *k, const unsigned char *v, int blocks, const int *q, float s, int c, float *acc) {
    return attend(k, v, blocks, q, s, c, acc, 0);
}

__attribute__((noinline, target("avx512vnni"))) float attend_vnni(const unsigned char *k, const unsigned char *v, int blocks, const int *q, float s, int c, float *acc) {
    return attend(k, v, blocks, q, s, c, acc, 1);
}

/* RowKernels.FourRowsInt16's loop: four rows' int16 pairs (one int each) broadcast against a 64-column panel row of int16
 * pairs (128 shorts), 16 int32 accumulators; the int32 sums go to floats every 256 pair rows, as there. */
#define ROW(R)                                                                                                              \
    {                                                                                                                       \
        __m512i b = _mm512_set1_epi32(q##R[p]);                                                                             \
        a##R##0 = OP(a##R##0, b, w0); a##R##1 = OP(a##R##1, b, w1); a##R##2 = OP(a##R##2, b, w2); a##R##3 = OP(a##R##3, b, w3); \
    }
#define FOUR_ROWS(NAME, ATTR)                                                                                               \
    __attribute__((noinline ATTR)) void NAME(const int *q, long stride, const short *panel, int pairs, float *out) {      \
        const int *q0 = q, *q1 = q + stride, *q2 = q + 2 * stride, *q3 = q + 3 * stride;                                   \
        __m512 f[16];                                                                                                      \
        for (int i = 0; i < 16; i++) f[i] = _mm512_setzero_ps();                                                           \
        const short *row = panel;                                                                                          \
        for (int p0 = 0; p0 < pairs; p0 += 256) {                                                                          \
            __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00;        \
            __m512i a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;     \
            for (int p = p0, end = pairs < p0 + 256 ? pairs : p0 + 256; p < end; p++, row += 128) {                       \
                __m512i w0 = _mm512_loadu_si512(row), w1 = _mm512_loadu_si512(row + 32);                                   \
                __m512i w2 = _mm512_loadu_si512(row + 64), w3 = _mm512_loadu_si512(row + 96);                              \
                ROW(0) ROW(1) ROW(2) ROW(3)                                                                                \
            }                                                                                                              \
            __m512i a[16] = {a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33};             \
            for (int i = 0; i < 16; i++) f[i] = _mm512_add_ps(f[i], _mm512_cvtepi32_ps(a[i]));                             \
        }                                                                                                                  \
        for (int i = 0; i < 16; i++) _mm512_storeu_ps(out + 16 * i, f[i]);                                                 \
    }
#define OP(a, b, w) _mm512_add_epi32(a, _mm512_madd_epi16(b, w))
FOUR_ROWS(four_rows_int16, )
#undef OP
#define OP(a, b, w) _mm512_dpwssd_epi32(a, b, w)
#define VNNI_TARGET , target("avx512vnni")
FOUR_ROWS(four_rows_vnni, VNNI_TARGET)

static void time_attention(double mb, int vnni) {
    const int blocks = 25;   /* 400 positions: fashion-mnist-28's mean length under 16 clients */
    long rows = (long)(mb * 1e6 / (2.0 * BLOCK_BYTES * blocks));
    if (rows < 1) rows = 1;
    long bytes = rows * blocks * BLOCK_BYTES;
    unsigned char *keys = aligned_alloc(64, bytes), *values = aligned_alloc(64, bytes);
    srand(1);
    for (long i = 0; i < bytes; i++) { keys[i] = (unsigned char)rand(); values[i] = (unsigned char)(rand() % 255 - 127); }
    for (long b = 0; b < rows * blocks; b++)
        for (int i = 0; i < 16; i++) {
            ((float *)(keys + b * BLOCK_BYTES))[i] = 0.01f + 0.001f * (rand() % 10);
            ((float *)(values + b * BLOCK_BYTES))[i] = 0.01f;
        }
    int query[8];
    for (int i = 0; i < 8; i++) query[i] = rand() & 0x3f3f3f3f;
    float acc[32], sink = 0;
    for (int variant = 0; variant < 1 + vnni; variant++) {
        double best = 1e9;
        for (int it = 0; it < 20; it++) {
            double t = now();
            for (long r = 0; r < rows; r++) {
                const unsigned char *k = keys + r * blocks * BLOCK_BYTES, *v = values + r * blocks * BLOCK_BYTES;
                sink += variant ? attend_vnni(k, v, blocks, query, 0.02f, 1000, acc) : attend_byte_pairs(k, v, blocks, query, 0.02f, 1000, acc);
            }
            t = now() - t;
            if (t < best) best = t;
        }
        printf("attention %.1f %s %.2f\n", 2.0 * bytes / 1e6, variant ? "vnni" : "byte-pairs", best / (rows * blocks) * 1e9);
    }
    if (sink == 12345) puts("");
    free(keys);
    free(values);
}

static void time_products(int panels, int vnni) {
    const int pairs = 64;   /* a 128-wide input: fashion-mnist-28's QKV, projection and fc products */
    long shorts = (long)panels * pairs * 128;
    short *panel = aligned_alloc(64, shorts * 2);
    int *q = aligned_alloc(64, 16L * pairs * 4);
    srand(2);
    for (long i = 0; i < shorts; i++) panel[i] = (short)(rand() % 8191 - 4095);
    for (long i = 0; i < 16L * pairs; i++) q[i] = (rand() % 8191 - 4095) & 0xFFFF;
    float out[256];
    for (int variant = 0; variant < 1 + vnni; variant++) {
        double best = 1e9;
        for (int it = 0; it < 50; it++) {
            double t = now();
            for (int b = 0; b < panels; b++)
                for (int r = 0; r < 16; r += 4)
                    (variant ? four_rows_vnni : four_rows_int16)(q + r * pairs, pairs, panel + (long)b * pairs * 128, pairs, out);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("products %.2f %s %.2f\n", shorts * 2 / 1e6, variant ? "vnni" : "int16-pairs", best / (4.0 * panels * pairs) * 1e9 / 16);
    }
    free(panel);
    free(q);
}

int main(void) {
    __builtin_cpu_init();
    int vnni = __builtin_cpu_supports("avx512vnni") != 0;
    if (!__builtin_cpu_supports("avx512bw")) { fprintf(stderr, "native_kernels: this CPU has no AVX-512BW\n"); return 2; }
    time_attention(0.6, vnni);
    time_attention(14.4, vnni);
    time_attention(28.8, vnni);
    time_products(6, vnni);
    time_products(50, vnni);
    return 0;
}
