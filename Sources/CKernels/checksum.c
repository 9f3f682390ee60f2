#include "CKernels.h"

#include <string.h>

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78; iSCSI, ext4, Btrfs), the checksum of
// feature-store tiles.
//
// With SSE4.2 the `crc32` instruction does 8 bytes per step but has a 3-cycle latency, so long
// buffers are cut in three equal lanes run interleaved (one instruction per cycle), and the three
// lane CRCs are joined with the zlib-style combine: shifting a CRC over n zero bytes is a
// multiplication by x^(8n) modulo the polynomial. Without SSE4.2, a slicing-by-8 table loop.

#define GS_CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
/// x^(2^k) mod P for k = 0…31, to build x^(8n) by squaring.
static uint32_t x2n_table[32];

/// a·b mod P, in the reflected bit order (bit 31 is x^0).
static uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ GS_CRC32C_POLY : b >> 1;
    }
    return p;
}

/// x^(n·2^k) mod P.
static uint32_t x_power_mod_p(uint64_t n, unsigned k) {
    uint32_t p = 1u << 31;
    while (n) {
        if (n & 1) p = multiply_mod_p(x2n_table[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

static void build_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ GS_CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    }
    uint32_t p = 1u << 30;  // x^1
    for (int k = 0; k < 32; k++) {
        x2n_table[k] = p;
        p = multiply_mod_p(p, p);
    }
}

static void ensure_tables(void) {
    static int ready = 0;
    // Idempotent and cheap: racing threads compute the same values; the flag is set last.
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        build_tables();
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
}

uint32_t gs_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2) {
    ensure_tables();
    return multiply_mod_p(x_power_mod_p(length2, 3), crc1) ^ crc2;
}

/// Slicing-by-8 on the raw (pre-inverted) state.
static uint32_t crc_portable(uint32_t state, const uint8_t *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        state = (state >> 8) ^ crc_table[0][(state ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= state;
        state = crc_table[7][word & 0xFF] ^ crc_table[6][(word >> 8) & 0xFF] ^ crc_table[5][(word >> 16) & 0xFF] ^
                crc_table[4][(word >> 24) & 0xFF] ^ crc_table[3][(word >> 32) & 0xFF] ^ crc_table[2][(word >> 40) & 0xFF] ^
                crc_table[1][(word >> 48) & 0xFF] ^ crc_table[0][word >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) state = (state >> 8) ^ crc_table[0][(state ^ *p++) & 0xFF];
    return state;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define GS_SSE42 __attribute__((target("sse4.2")))

static int has_sse42(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("sse4.2");
    }
    return cached;
}

GS_SSE42 static uint32_t crc_hardware_serial(uint32_t state, const uint8_t *p, size_t n) {
    uint64_t s = state;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        s = _mm_crc32_u64(s, word);
        p += 8;
        n -= 8;
    }
    uint32_t s32 = (uint32_t)s;
    while (n--) s32 = _mm_crc32_u8(s32, *p++);
    return s32;
}

/// Three lanes of `lane` bytes each (a multiple of 8), interleaved; returns the standard CRCs of
/// the lanes (lane 0 continuing from `crc`, the others from 0).
GS_SSE42 static void crc_hardware_three_lanes(uint32_t crc, const uint8_t *p, size_t lane, uint32_t out[3]) {
    uint64_t a = ~crc, b = 0xFFFFFFFFu, c = 0xFFFFFFFFu;
    const uint8_t *pa = p, *pb = p + lane, *pc = p + 2 * lane;
    for (size_t i = 0; i < lane; i += 8) {
        uint64_t wa, wb, wc;
        memcpy(&wa, pa + i, 8);
        memcpy(&wb, pb + i, 8);
        memcpy(&wc, pc + i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        c = _mm_crc32_u64(c, wc);
    }
    out[0] = ~(uint32_t)a;
    out[1] = ~(uint32_t)b;
    out[2] = ~(uint32_t)c;
}
#endif

uint32_t gs_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    ensure_tables();
    return ~crc_portable(~crc, (const uint8_t *)data, length);
}

uint32_t gs_crc32c(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
#if defined(__x86_64__)
    if (has_sse42()) {
        // Below a few KiB the combine (two short multiplications chains) costs more than it saves.
        enum { LANES_FROM = 3 * 4096 };
        if (length >= LANES_FROM) {
            ensure_tables();
            size_t lane = (length / 3) & ~(size_t)7;
            uint32_t lanes[3];
            crc_hardware_three_lanes(crc, p, lane, lanes);
            uint32_t joined = gs_crc32c_combine(gs_crc32c_combine(lanes[0], lanes[1], lane), lanes[2], lane);
            p += 3 * lane;
            length -= 3 * lane;
            return ~crc_hardware_serial(~joined, p, length);
        }
        return ~crc_hardware_serial(~crc, p, length);
    }
#endif
    return gs_crc32c_portable(crc, p, length);
}
