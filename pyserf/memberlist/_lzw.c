/* Compiled twin of pyserf/memberlist/lzw.py: the same Go compress/lzw format (LSB order,
 * 8-bit literals), the same output byte for byte and the same refusals.
 *
 * Why it exists: LZW is three quarters of what a push-pull answer costs in Python, and
 * during a join storm every gossip datagram is compressed by its sender and expanded by its
 * receiver; measured on 50 real agents, turning compression off halved the storm's CPU.
 * The build treats this module as optional: without a C compiler lzw.py's pure-Python
 * codec runs instead, and the unit tests hold both to the same results.
 *
 * The decoder reads bytes straight off the network. Every table index is checked against
 * what has been defined and every write against the buffer it goes to, so no input reads or
 * writes out of bounds. The output is checked against the caller's limit whenever the bit
 * buffer is refilled, at most 7 codes (of at most 4,096 bytes each) apart (lzw.py: 8), so it
 * stops within ~28 KiB past the limit, in a buffer at most twice the output's size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define LZW_CLEAR 256
#define LZW_EOF 257
#define LZW_FIRST_FREE 258
#define LZW_MIN_WIDTH 9
#define LZW_MAX_WIDTH 12
#define LZW_MAX_CODE 4095 /* the writer clears rather than assign it */
#define LZW_TABLE_SIZE 4096

/* ---- writer ---------------------------------------------------------------------------- */

/* Open-addressing map from (prefix code << 8 | next byte) to the code of that string. At most
 * 4095 - 258 entries exist between clears, so 8192 slots keep the load under one half. */
#define MAP_BITS 13
#define MAP_SLOTS (1u << MAP_BITS)

typedef struct {
    uint32_t key[MAP_SLOTS]; /* key + 1; 0 marks an empty slot */
    uint16_t code[MAP_SLOTS];
} code_map;

static inline uint32_t map_slot(uint32_t key) {
    return (key * 2654435761u) >> (32 - MAP_BITS);
}

typedef struct {
    unsigned char *out;
    size_t pos;
    size_t cap;
    uint64_t bits;
    int nbits;
} bit_writer;

/* Append a code of ``width`` bits, least significant first. The buffer is sized for the
 * worst case up front, so this never grows it; the check guards that arithmetic. */
static inline int put_code(bit_writer *w, uint32_t code, int width) {
    w->bits |= (uint64_t)code << w->nbits;
    w->nbits += width;
    while (w->nbits >= 8) {
        if (w->pos >= w->cap) {
            return -1;
        }
        w->out[w->pos++] = (unsigned char)(w->bits & 0xFF);
        w->bits >>= 8;
        w->nbits -= 8;
    }
    return 0;
}

static PyObject *lzw_compress(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)view.buf;
    size_t n = (size_t)view.len;
    /* At most one code of at most 12 bits per input byte, a 12-bit clear per 3,837 codes,
     * and the opening clear, the flush, one more clear and the end code (under 8 bytes). */
    if (n > ((size_t)PY_SSIZE_T_MAX - 64) / 2) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    size_t cap = n + n / 2 + n / 256 + 64;
    unsigned char *out = PyMem_Malloc(cap);
    code_map *map = n > 1 ? PyMem_Calloc(1, sizeof(code_map)) : NULL;
    if (out == NULL || (n > 1 && map == NULL)) {
        PyMem_Free(out);
        PyMem_Free(map);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    bit_writer w = {out, 0, cap, 0, 0};
    int width = LZW_MIN_WIDTH;
    int failed = put_code(&w, LZW_CLEAR, width);
    if (n > 0 && !failed) {
        uint32_t hi = LZW_EOF; /* last code assigned or reserved */
        uint32_t overflow = 1u << LZW_MIN_WIDTH;
        uint32_t code = src[0];
        for (size_t i = 1; i < n && !failed; i++) {
            uint32_t lit = src[i];
            uint32_t key = (code << 8) | lit;
            uint32_t slot = map_slot(key);
            uint32_t found = 0;
            while (map->key[slot] != 0) {
                if (map->key[slot] == key + 1) {
                    found = map->code[slot];
                    break;
                }
                slot = (slot + 1) & (MAP_SLOTS - 1);
            }
            if (found != 0) { /* dictionary codes start at 258, so 0 means absent */
                code = found;
                continue;
            }
            failed = put_code(&w, code, width);
            code = lit;
            hi++;
            if (hi == overflow) {
                width++;
                overflow <<= 1;
            }
            if (hi == LZW_MAX_CODE) {
                /* Out of codes: the reader is told to start over, and so do we. */
                failed = failed || put_code(&w, LZW_CLEAR, width);
                width = LZW_MIN_WIDTH;
                hi = LZW_EOF;
                overflow = 1u << LZW_MIN_WIDTH;
                memset(map, 0, sizeof(code_map));
            } else {
                /* ``slot`` is the empty slot the probe ended on. */
                map->key[slot] = key + 1;
                map->code[slot] = (uint16_t)hi;
            }
        }
        /* The pending match. Go counts a code for it as well, which can widen the end code
         * or force one more clear; lzw.py mirrors the same bookkeeping. */
        failed = failed || put_code(&w, code, width);
        hi++;
        if (hi == overflow) {
            width++;
        }
        if (hi == LZW_MAX_CODE) {
            failed = failed || put_code(&w, LZW_CLEAR, width);
            width = LZW_MIN_WIDTH;
        }
    }
    failed = failed || put_code(&w, LZW_EOF, width);
    if (!failed && w.nbits > 0) {
        if (w.pos >= w.cap) {
            failed = 1;
        } else {
            w.out[w.pos++] = (unsigned char)(w.bits & 0xFF);
        }
    }
    PyMem_Free(map);
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (failed) {
        PyErr_SetString(PyExc_SystemError, "lzw: output bound miscalculated");
    } else {
        result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)w.pos);
    }
    PyMem_Free(out);
    return result;
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct {
    uint16_t prefix[LZW_TABLE_SIZE]; /* code of the string minus its last byte */
    uint16_t length[LZW_TABLE_SIZE]; /* bytes in the string (at most 4,096) */
    unsigned char last[LZW_TABLE_SIZE];
    unsigned char first[LZW_TABLE_SIZE];
} code_table;

typedef struct {
    unsigned char *buf;
    size_t len;
    size_t cap;
} byte_buffer;

static int reserve(byte_buffer *b, size_t extra) {
    if (b->len + extra <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        if (cap > (size_t)PY_SSIZE_T_MAX / 2) {
            return -1;
        }
        cap *= 2;
    }
    unsigned char *grown = PyMem_Realloc(b->buf, cap);
    if (grown == NULL) {
        return -1;
    }
    b->buf = grown;
    b->cap = cap;
    return 0;
}

/* Write the string for ``code`` at ``dst`` by walking its prefixes back to the literal. */
static void expand(const code_table *t, uint32_t code, unsigned char *dst) {
    size_t i = t->length[code];
    while (i > 0) {
        dst[--i] = t->last[code];
        code = t->prefix[code];
    }
}

static PyObject *lzw_decompress(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer view;
    Py_ssize_t max_output;
    if (!PyArg_ParseTuple(args, "y*n", &view, &max_output)) {
        return NULL;
    }
    code_table *t = PyMem_Malloc(sizeof(code_table));
    if (t == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (uint32_t c = 0; c < 256; c++) {
        t->prefix[c] = 0;
        t->length[c] = 1;
        t->last[c] = (unsigned char)c;
        t->first[c] = (unsigned char)c;
    }
    const unsigned char *src = (const unsigned char *)view.buf;
    size_t n = (size_t)view.len;
    size_t pos = 0;
    uint64_t bits = 0;
    int nbits = 0;
    int width = LZW_MIN_WIDTH;
    uint32_t mask = (1u << width) - 1;
    uint32_t hi = LZW_EOF;      /* the code the next entry will get */
    uint32_t defined = LZW_FIRST_FREE; /* entries below this index hold strings */
    uint32_t overflow = 1u << width;
    int64_t prev = -1;          /* previous code; -1 after a clear or once the table is full */
    byte_buffer out = {NULL, 0, 0};
    const char *error = NULL;
    char message[96];
    int oom = 0;
    int over_limit = 0;

    for (;;) {
        if (nbits < width) {
            if (max_output < 0 || out.len > (size_t)max_output) {
                over_limit = 1;
                break;
            }
            while (nbits <= 56 && pos < n) {
                bits |= (uint64_t)src[pos++] << nbits;
                nbits += 8;
            }
            if (nbits < width) {
                error = "lzw: unexpected EOF";
                break;
            }
        }
        uint32_t code = (uint32_t)(bits & mask);
        bits >>= width;
        nbits -= width;

        uint32_t entry_len;
        unsigned char entry_first;
        /* A defined string: below hi, or hi itself once the table is full (hi stays at 4095
         * and that entry already exists). */
        if (code < LZW_CLEAR
            || (code > LZW_EOF && code < defined && (code < hi || (code == hi && prev < 0)))) {
            entry_len = t->length[code];
            entry_first = t->first[code];
            if (reserve(&out, entry_len) < 0) {
                oom = 1;
                break;
            }
            expand(t, code, out.buf + out.len);
        } else if (code == LZW_CLEAR) {
            width = LZW_MIN_WIDTH;
            mask = (1u << width) - 1;
            hi = LZW_EOF;
            defined = LZW_FIRST_FREE;
            overflow = 1u << width;
            prev = -1;
            continue;
        } else if (code == LZW_EOF) {
            break;
        } else if (code == hi && prev >= 0) {
            /* The code being defined right now: the previous string plus its own first byte. */
            uint32_t p = (uint32_t)prev;
            entry_len = (uint32_t)t->length[p] + 1;
            entry_first = t->first[p];
            if (reserve(&out, entry_len) < 0) {
                oom = 1;
                break;
            }
            expand(t, p, out.buf + out.len);
            out.buf[out.len + entry_len - 1] = entry_first;
        } else {
            snprintf(message, sizeof message, "lzw: invalid code %u", code);
            error = message;
            break;
        }
        out.len += entry_len;
        if (prev >= 0) {
            /* Define hi as the previous string plus this one's first byte. */
            uint32_t p = (uint32_t)prev;
            if (hi >= LZW_TABLE_SIZE || hi != defined || t->length[p] >= LZW_TABLE_SIZE) {
                error = "lzw: internal table error";
                break;
            }
            t->prefix[hi] = (uint16_t)p;
            t->length[hi] = (uint16_t)(t->length[p] + 1);
            t->last[hi] = entry_first;
            t->first[hi] = t->first[p];
            defined = hi + 1;
        }
        prev = code;
        hi++;
        if (hi >= overflow) {
            if (width == LZW_MAX_WIDTH) {
                /* Table full: keep decoding with the codes there are until a clear. */
                prev = -1;
                hi--;
            } else {
                width++;
                mask = (mask << 1) | 1;
                overflow <<= 1;
            }
        }
    }
    if (!error && !oom && (max_output < 0 || out.len > (size_t)max_output)) {
        over_limit = 1;
    }
    PyMem_Free(t);
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (oom) {
        PyErr_NoMemory();
    } else if (over_limit) {
        PyErr_Format(PyExc_ValueError, "lzw: decompressed size exceeds limit of %zd bytes",
                     max_output);
    } else if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
    } else {
        result = PyBytes_FromStringAndSize(out.buf ? (const char *)out.buf : "",
                                           (Py_ssize_t)out.len);
    }
    PyMem_Free(out.buf);
    return result;
}

static PyMethodDef lzw_methods[] = {
    {"compress", lzw_compress, METH_O,
     "compress(data) -> bytes: Go compress/lzw output (LSB, 8-bit literals)."},
    {"decompress", lzw_decompress, METH_VARARGS,
     "decompress(data, max_output) -> bytes; raises ValueError for bad or oversized input."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lzw_module = {
    PyModuleDef_HEAD_INIT, "_lzw", "Compiled twin of pyserf.memberlist.lzw.", -1, lzw_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lzw(void) {
    return PyModule_Create(&lzw_module);
}
