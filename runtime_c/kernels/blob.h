/* mcutrain parameter blob and federated delta: the device's persistence and transport format.
 *
 * Every message is a 20-byte header followed by a payload; all fields are little-endian (written
 * byte by byte, so the format is the same on any CPU):
 *
 *   offset size field
 *        0    4 magic: "MTPB" parameter blob, "MTDF" float32 delta, "MTDQ" int8 delta, "MTDI" delta of a
 *               model with integer parameters
 *        4    2 format version (MT_BLOB_VERSION)
 *        6    2 number of tensors (trainable + state)
 *        8    4 model hash (<PREFIX>_MODEL_HASH: trainable names/shapes + model structure)
 *       12    4 payload length in bytes
 *       16    4 CRC-32 of the payload (zlib/IEEE 802.3: reflected polynomial 0xEDB88320,
 *               initial value and final xor 0xFFFFFFFF)
 *       20      payload
 *
 * Payloads (tensors in the order listed in <prefix>.h, each flattened row-major: the trainable
 * ones, then the state section, the running statistics of generate --mode train; version 2;
 * version 3: integer parameters):
 *   MTPB  the trainable parameters and the state as float32; a parameter that trains as integers
 *         (generate --update int8) as its bytes in as many 4-byte words (int8: four to a word,
 *         the last word zero-padded; int32 little-endian)
 *   MTDF  uint32 sample count, then (current - round start) as float32
 *   MTDQ  uint32 sample count, one float32 scale per tensor, then (current - round start) as int8:
 *         q = clamp(floor(d / scale + 0.5), -127, 127), scale = max|d| / 127 of the tensor
 *         (0 if the tensor did not change); d ~= q * scale, error <= scale / 2.
 *   MTDI  a model with integer parameters (its only delta kind): uint32 sample count, then each
 *         tensor's (current - round start), exact: float32 tensors as float32, int8 ones as int16
 *         (padded to a multiple of 4 bytes), int32 ones as int32 (saturated).
 *
 * A message is only used after every field and the CRC have been checked, so a refused load
 * leaves the model untouched. Header-only, C99, no allocation. */
#ifndef MT_BLOB_H
#define MT_BLOB_H
#include "../mt_common.h"

#define MT_BLOB_VERSION 3
#define MT_BLOB_HEADER_BYTES 20
#define MT_MAGIC_PARAMS "MTPB"
#define MT_MAGIC_DELTA_F32 "MTDF"
#define MT_MAGIC_DELTA_I8 "MTDQ"
#define MT_MAGIC_DELTA_INT "MTDI"

/* Return codes of the load/save functions: bytes written (save) or 0 (load) on success. */
#define MT_BLOB_OK 0
#define MT_BLOB_ERR_SIZE (-1)    /* buffer too small, or message truncated / with trailing bytes */
#define MT_BLOB_ERR_MAGIC (-2)   /* not this kind of message */
#define MT_BLOB_ERR_VERSION (-3) /* another format version */
#define MT_BLOB_ERR_HASH (-4)    /* from another model or trainable set */
#define MT_BLOB_ERR_COUNT (-5)   /* wrong number of tensors */
#define MT_BLOB_ERR_LENGTH (-6)  /* payload length field does not match this model */
#define MT_BLOB_ERR_CRC (-7)     /* payload corrupted */

static inline uint32_t mt_crc32(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; ++i) {
        crc ^= p[i];
        for (k = 0; k < 8; ++k)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static inline void mt_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t mt_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void mt_put_f32(uint8_t *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    mt_put_u32(p, bits);
}

static inline float mt_get_f32(const uint8_t *p)
{
    uint32_t bits = mt_get_u32(p);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

/* Write the header of a message whose payload is already at msg + MT_BLOB_HEADER_BYTES. */
static inline void mt_blob_finish(uint8_t *msg, const char *magic, uint32_t ntensors, uint32_t hash,
                                  uint32_t payload_bytes)
{
    memcpy(msg, magic, 4);
    msg[4] = (uint8_t)MT_BLOB_VERSION;
    msg[5] = (uint8_t)(MT_BLOB_VERSION >> 8);
    msg[6] = (uint8_t)ntensors;
    msg[7] = (uint8_t)(ntensors >> 8);
    mt_put_u32(msg + 8, hash);
    mt_put_u32(msg + 12, payload_bytes);
    mt_put_u32(msg + 16, mt_crc32(msg + MT_BLOB_HEADER_BYTES, payload_bytes));
}

/* MT_BLOB_OK if msg (len bytes) is a valid message of this kind for this model, else the error. */
static inline int32_t mt_blob_check(const uint8_t *msg, size_t len, const char *magic, uint32_t ntensors,
                                    uint32_t hash, uint32_t payload_bytes)
{
    if (len < MT_BLOB_HEADER_BYTES) return MT_BLOB_ERR_SIZE;
    if (memcmp(msg, magic, 4) != 0) return MT_BLOB_ERR_MAGIC;
    if (((uint32_t)msg[4] | ((uint32_t)msg[5] << 8)) != MT_BLOB_VERSION) return MT_BLOB_ERR_VERSION;
    if (mt_get_u32(msg + 8) != hash) return MT_BLOB_ERR_HASH;
    if (((uint32_t)msg[6] | ((uint32_t)msg[7] << 8)) != ntensors) return MT_BLOB_ERR_COUNT;
    if (mt_get_u32(msg + 12) != payload_bytes) return MT_BLOB_ERR_LENGTH;
    if (len != (size_t)MT_BLOB_HEADER_BYTES + payload_bytes) return MT_BLOB_ERR_SIZE;
    if (mt_crc32(msg + MT_BLOB_HEADER_BYTES, payload_bytes) != mt_get_u32(msg + 16)) return MT_BLOB_ERR_CRC;
    return MT_BLOB_OK;
}

/* One tensor of an int8 delta: its scale to *scale, cur - start quantized to q[0..n). */
static inline void mt_delta_i8(const float *cur, const float *start, uint32_t n, uint8_t *scale, uint8_t *q)
{
    float m = 0.0f, s;
    uint32_t i;
    for (i = 0; i < n; ++i) {
        float d = fabsf(cur[i] - start[i]);
        if (d > m) m = d;
    }
    s = m / 127.0f;
    mt_put_f32(scale, s);
    for (i = 0; i < n; ++i) {
        float v = s > 0.0f ? floorf((cur[i] - start[i]) / s + 0.5f) : 0.0f;
        v = v > 127.0f ? 127.0f : (v >= -127.0f ? v : -127.0f); /* NaN -> -127: no UB */
        q[i] = (uint8_t)(int8_t)v;
    }
}

/* The tensors of an MTDI delta: (cur - start) of n values written at p; each returns the end. */
static inline uint8_t *mt_delta_f32(const float *cur, const float *start, uint32_t n, uint8_t *p)
{
    uint32_t i;
    for (i = 0; i < n; ++i) mt_put_f32(p + 4 * i, cur[i] - start[i]);
    return p + 4 * n;
}

static inline uint8_t *mt_delta_s8(const int8_t *cur, const int8_t *start, uint32_t n, uint8_t *p)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        const uint16_t d = (uint16_t)(int16_t)((int16_t)cur[i] - (int16_t)start[i]);
        p[2 * i] = (uint8_t)d;
        p[2 * i + 1] = (uint8_t)(d >> 8);
    }
    if (n % 2) p[2 * n] = p[2 * n + 1] = 0u;
    return p + 4 * ((n + 1) / 2);
}

static inline uint8_t *mt_delta_s32(const int32_t *cur, const int32_t *start, uint32_t n, uint8_t *p)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        const int64_t d = (int64_t)cur[i] - (int64_t)start[i];
        mt_put_u32(p + 4 * i, (uint32_t)(int32_t)(d > 2147483647 ? 2147483647 : d < -2147483647 ? -2147483647 : d));
    }
    return p + 4 * n;
}

#endif
