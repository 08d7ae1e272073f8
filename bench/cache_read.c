/* Read bandwidth and load latency of one core by working-set size: where this VM's caches end (benchmarks/README.md,
 * "Balanced row lanes"). Each size: the best of repeated AVX-512 streaming sums over the buffer, and a pointer chase over
 * its 64-byte lines in a random order (4 KiB pages: the latency includes TLB misses past the TLB's reach).
 *     gcc -O2 -mavx512f -o /tmp/cache_read bench/cache_read.c && /tmp/cache_read
 * Run it on an otherwise idle machine. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(void) {
    const size_t sizes[] = {256 << 10, 768 << 10, 4 << 20, 8 << 20, 16 << 20, 24 << 20, 64 << 20, 512 << 20};
    for (int s = 0; s < 8; s++) {
        size_t n = sizes[s];
        char *p = aligned_alloc(2 << 20, n);
        for (size_t i = 0; i < n; i++) p[i] = (char)i;
        __m512i acc = _mm512_setzero_si512();
        double best = 1e9;
        int reps = (int)(2e9 / n);
        if (reps < 3) reps = 3;
        if (reps > 2000) reps = 2000;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            for (size_t i = 0; i < n; i += 256) {
                acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i));
                acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 64));
                acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 128));
                acc = _mm512_add_epi32(acc, _mm512_load_si512(p + i + 192));
            }
            double t = now() - t0;
            if (t < best) best = t;
        }
        size_t lines = n / 64;
        uint32_t *perm = malloc(lines * 4);
        for (size_t i = 0; i < lines; i++) perm[i] = (uint32_t)i;
        for (size_t i = lines - 1; i > 0; i--) { size_t j = (size_t)rand() % (i + 1); uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
        for (size_t i = 0; i < lines; i++) *(char **)(p + (size_t)perm[i] * 64) = p + (size_t)perm[(i + 1) % lines] * 64;
        char *q = p;
        const size_t steps = 20000000;
        double t0 = now();
        for (size_t i = 0; i < steps; i++) q = *(char **)q;
        double latency = (now() - t0) / steps * 1e9;
        printf("%7zu KiB: read %6.1f GB/s, latency %6.1f ns%s\n", n >> 10, n / best / 1e9, latency,
               (q == NULL || (_mm512_reduce_add_epi32(acc) & 0x7fffffff) == 0x7fffffff) ? " " : "");
        free(perm);
        free(p);
    }
    return 0;
}
