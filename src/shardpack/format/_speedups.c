/* Record payloads <-> Python objects where msgspec cannot do what the format needs.
 *
 * decode(buffer, begin, end, hook): the msgpack value in buffer[begin:end], as msgspec's decoder
 *     gives it, except that a native string (extension EXT_NATIVE_STR: one byte of kind, then
 *     the characters as CPython stores them, 1, 2 or 4 bytes each, little-endian) becomes a str
 *     by one copy instead of a UTF-8 decode. Other extensions go to hook(code, bytes). Used for
 *     blocks without arrays (text): bounds-checked at every read, as the bytes may be hostile.
 *     Map keys and short ASCII values come from small caches (one object each).
 *
 * decode_block(raw, count, hook[, wanted]): the records of a raw block (format/block.py's
 *     layout) in one call, or None for a block with an arena (arrays: BlockView and msgspec
 *     decode those). With `wanted` (a set of keys), each record keeps only those keys, the
 *     other values stepped over unbuilt (`columns=`).
 *
 * decode_block_columns(raw, count, hook): the same block as (keys, [each key's values]) where
 *     every record is a map of the same keys in the same order, no dict made
 *     (`iter_batches(as_columns=True)`); None for any other block.
 *     ValueError for anything inconsistent: the reader then decodes the block through
 *     BlockView, which names the fault.
 *
 * nativize(payload): payload with each non-ASCII str value (not map keys) rewritten as a native
 *     string where that takes at most 1.5 times its UTF-8 bytes; the same object when nothing
 *     changes. Byte for byte what the pure-Python fallback (format/strings.py) writes.
 *
 * All optional: without a compiler the package uses the fallbacks and writes the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if !PY_LITTLE_ENDIAN
#error "native strings are little-endian: big-endian machines use the pure-Python fallback"
#endif

#define EXT_NATIVE_STR 4
#define MAX_DEPTH 1024 /* decoding; the writer's own limit is far lower (bounds.py) */
#define KEY_SLOT_BITS 9
#define KEY_SLOTS (1 << KEY_SLOT_BITS) /* direct-mapped cache of short ASCII map keys */
#define KEY_MAX 32

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    PyObject *hook;
} Reader;

static PyObject *key_cache[KEY_SLOTS];
static PyObject *value_cache[KEY_SLOTS];
#define VALUE_MAX 16

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static inline int is_ascii(const unsigned char *s, Py_ssize_t n) {
    uint64_t acc = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        acc |= word;
    }
    for (; i < n; i++) acc |= s[i];
    return (acc & 0x8080808080808080ULL) == 0;
}

static PyObject *truncated(void) {
    PyErr_SetString(PyExc_ValueError, "msgpack data ends inside a value");
    return NULL;
}

/* n bytes from the reader, or NULL (error set) when fewer are left */
static inline const unsigned char *take(Reader *r, Py_ssize_t n) {
    if (n < 0 || r->end - r->p < n) {
        truncated();
        return NULL;
    }
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

/* The characters and widest code point of UTF-8 text: the strict decoder's rules (no overlong
 * forms, surrogates or points past U+10FFFF), so that bad bytes are an error and never a bad
 * string. -1: malformed. */
static int utf8_measure(const unsigned char *s, Py_ssize_t n, Py_ssize_t *chars, uint32_t *widest) {
    Py_ssize_t i = 0, count = 0;
    uint32_t max = 0;
    while (i < n) {
        unsigned char b = s[i];
        uint32_t point;
        if (b < 0x80) {
            /* a run of ASCII, 16 or 8 bytes at a time */
            uint64_t word;
#if defined(__SSE2__)
            while (i + 16 <= n && _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(s + i))) == 0) {
                i += 16;
                count += 16;
            }
#endif
            while (i + 8 <= n && (memcpy(&word, s + i, 8), (word & 0x8080808080808080ULL) == 0)) {
                i += 8;
                count += 8;
            }
            while (i < n && s[i] < 0x80) {
                i++;
                count++;
            }
            continue;
        } else if (b >= 0xC2 && b < 0xE0 && i + 2 <= n && (s[i + 1] & 0xC0) == 0x80) {
            point = (uint32_t)(b & 0x1F) << 6 | (s[i + 1] & 0x3F);
            i += 2;
        } else if (b >= 0xE0 && b < 0xF0 && i + 3 <= n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80) {
            point = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
            if (point < 0x800 || (point >= 0xD800 && point <= 0xDFFF)) return -1;
            i += 3;
        } else if (b >= 0xF0 && b < 0xF5 && i + 4 <= n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80 && (s[i + 3] & 0xC0) == 0x80) {
            point = (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
                    (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
            if (point < 0x10000 || point > 0x10FFFF) return -1;
            i += 4;
        } else {
            return -1;
        }
        if (point > max) max = point;
        count++;
    }
    *chars = count;
    *widest = max;
    return 0;
}

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* Well-formed UTF-8 (utf8_measure said so) written as `kind`-byte characters, little-endian;
 * inlined once per kind, so that each loop is compiled for its own width. */
static ALWAYS_INLINE void transcode_as(const unsigned char *s, Py_ssize_t n, const int kind,
                                       unsigned char *dest) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        uint32_t point;
        uint64_t word;
        if (b < 0x80 && i + 8 <= n && (memcpy(&word, s + i, 8), (word & 0x8080808080808080ULL) == 0)) {
            /* 8 ASCII characters: mostly-English text with a curly quote is mostly this */
            if (kind == 1) {
                memcpy(dest, s + i, 8);
            } else {
#if defined(__SSE2__)
                const __m128i zero = _mm_setzero_si128();
                __m128i units = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(s + i)), zero);
                if (kind == 2) {
                    _mm_storeu_si128((__m128i *)dest, units);
                } else {
                    _mm_storeu_si128((__m128i *)dest, _mm_unpacklo_epi16(units, zero));
                    _mm_storeu_si128((__m128i *)(dest + 16), _mm_unpackhi_epi16(units, zero));
                }
#else
                for (int k = 0; k < 8; k++) { /* memcpy: the writer's dest is not aligned */
                    uint16_t unit = s[i + k];
                    uint32_t wide = s[i + k];
                    if (kind == 2) memcpy(dest + 2 * k, &unit, 2);
                    else memcpy(dest + 4 * k, &wide, 4);
                }
#endif
            }
            dest += 8 * kind;
            i += 8;
            continue;
        }
        if (b < 0x80) {
            point = b;
            i += 1;
        } else if (b < 0xE0) {
            point = (uint32_t)(b & 0x1F) << 6 | (s[i + 1] & 0x3F);
            i += 2;
        } else if (b < 0xF0) {
            point = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
            i += 3;
        } else {
            point = (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
                    (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
            i += 4;
        }
        if (kind == 1) {
            *dest++ = (unsigned char)point;
        } else if (kind == 2) {
            uint16_t unit = (uint16_t)point;
            memcpy(dest, &unit, 2);
            dest += 2;
        } else {
            memcpy(dest, &point, 4);
            dest += 4;
        }
    }
}

static void utf8_transcode(const unsigned char *s, Py_ssize_t n, int kind, unsigned char *dest) {
    if (kind == 1) transcode_as(s, n, 1, dest);
    else if (kind == 2) transcode_as(s, n, 2, dest);
    else transcode_as(s, n, 4, dest);
}

/* UTF-8 -> str. ASCII (most text) is copied while it is checked, in one pass; other text is
 * measured, then written in the kind CPython would pick (str equality compares kinds). */
static PyObject *str_from_utf8(const unsigned char *s, Py_ssize_t n) {
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL) return NULL;
    unsigned char *to = PyUnicode_1BYTE_DATA(text);
    int ascii;
#if defined(__SSE2__)
    if (n >= 16) { /* 16 bytes a step; the last step overlaps the one before, not a byte loop */
        __m128i acc = _mm_setzero_si128(), v;
        for (Py_ssize_t i = 0; i + 16 <= n; i += 16) {
            v = _mm_loadu_si128((const __m128i *)(s + i));
            acc = _mm_or_si128(acc, v);
            _mm_storeu_si128((__m128i *)(to + i), v);
        }
        v = _mm_loadu_si128((const __m128i *)(s + n - 16));
        acc = _mm_or_si128(acc, v);
        _mm_storeu_si128((__m128i *)(to + n - 16), v);
        ascii = _mm_movemask_epi8(acc) == 0;
    } else
#endif
    {
        uint64_t acc = 0, word;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&word, s + i, 8);
            acc |= word;
            memcpy(to + i, &word, 8);
        }
        for (; i < n; i++) {
            acc |= s[i];
            to[i] = s[i];
        }
        ascii = (acc & 0x8080808080808080ULL) == 0;
    }
    if (ascii) return text;
    Py_DECREF(text);
    Py_ssize_t chars;
    uint32_t widest;
    if (utf8_measure(s, n, &chars, &widest) < 0) /* CPython's decoder names the fault */
        return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    text = PyUnicode_New(chars, widest);
    if (text == NULL) return NULL;
    utf8_transcode(s, n, PyUnicode_KIND(text), PyUnicode_DATA(text));
    return text;
}

static inline uint64_t word_at(const unsigned char *s) {
    uint64_t word;
    memcpy(&word, s, 8);
    return word;
}

/* A slot for s[0:n], n <= KEY_MAX, from its bytes read a word at a time (the last word overlaps
 * the one before where n is not a multiple of 8): a byte-wise hash cost more than the lookup */
static inline size_t short_slot(const unsigned char *s, Py_ssize_t n) {
    const uint64_t mix = 0x9E3779B97F4A7C15ULL;
    uint64_t h = (uint64_t)n * mix;
    if (n >= 8) {
        for (Py_ssize_t i = 0; i + 8 < n; i += 8) h = (h ^ word_at(s + i)) * mix;
        h = (h ^ word_at(s + n - 8)) * mix;
    } else if (n >= 4) {
        uint32_t head, tail;
        memcpy(&head, s, 4);
        memcpy(&tail, s + n - 4, 4);
        h = (h ^ ((uint64_t)head << 32 | tail)) * mix;
    } else if (n > 0) {
        h = (h ^ (uint64_t)(s[0] | s[n / 2] << 8 | s[n - 1] << 16)) * mix;
    }
    return (size_t)(h >> (64 - KEY_SLOT_BITS));
}

/* s[0:n] == t[0:n] for short n, in words rather than a libc call */
static inline int same_short(const unsigned char *s, const unsigned char *t, Py_ssize_t n) {
    if (n >= 8) {
        for (Py_ssize_t i = 0; i + 8 < n; i += 8)
            if (word_at(s + i) != word_at(t + i)) return 0;
        return word_at(s + n - 8) == word_at(t + n - 8);
    }
    if (n >= 4) {
        uint32_t a, b, c, d;
        memcpy(&a, s, 4);
        memcpy(&b, t, 4);
        memcpy(&c, s + n - 4, 4);
        memcpy(&d, t + n - 4, 4);
        return a == b && c == d;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] != t[i]) return 0;
    return 1;
}

/* A short string from `cache` (one of the tables below): map keys, and short values that repeat
 * (roles, languages, sources) are one object each. Only ASCII is cached, so a hit needs no
 * ASCII check; a miss caches the string when it is ASCII. */
static PyObject *cached_str(PyObject **cache, const unsigned char *s, Py_ssize_t n) {
    PyObject **slot = &cache[short_slot(s, n)];
    PyObject *cached = *slot;
    if (cached != NULL && PyUnicode_GET_LENGTH(cached) == n &&
        same_short(PyUnicode_1BYTE_DATA(cached), s, n)) {
        Py_INCREF(cached);
        return cached;
    }
    PyObject *text = str_from_utf8(s, n);
    if (text == NULL || !PyUnicode_IS_ASCII(text)) return text;
    Py_INCREF(text);
    Py_XSETREF(*slot, text);
    return text;
}

static PyObject *key_from_utf8(const unsigned char *s, Py_ssize_t n) {
    return n > KEY_MAX ? str_from_utf8(s, n) : cached_str(key_cache, s, n);
}

/* A native string's characters -> str. Refuses what the writer never makes and CPython cannot
 * hold: code points past U+10FFFF, and surrogates (the writer stores those as EXT_RAW_STR). */
static PyObject *str_from_native(const unsigned char *data, Py_ssize_t size) {
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "native string without its kind byte");
        return NULL;
    }
    int kind = data[0];
    const unsigned char *chars = data + 1;
    Py_ssize_t bytes = size - 1;
    if (kind == 1) return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, chars, bytes);
    if (kind != 2 && kind != 4) {
        PyErr_Format(PyExc_ValueError, "native string of unknown kind %d", kind);
        return NULL;
    }
    if (bytes % kind != 0) {
        PyErr_Format(PyExc_ValueError, "native string of kind %d holds %zd bytes", kind, bytes);
        return NULL;
    }
    Py_ssize_t length = bytes / kind;
    if (kind == 2) {
        for (Py_ssize_t i = 0; i < length; i++) {
            uint16_t unit = (uint16_t)(chars[2 * i] | chars[2 * i + 1] << 8);
            if (unit >= 0xD800 && unit <= 0xDFFF) {
                PyErr_SetString(PyExc_ValueError, "native string holds a surrogate");
                return NULL;
            }
        }
        return PyUnicode_FromKindAndData(PyUnicode_2BYTE_KIND, chars, length);
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        uint32_t point;
        memcpy(&point, chars + 4 * i, 4);
        if (point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF)) {
            PyErr_SetString(PyExc_ValueError, "native string holds an invalid code point");
            return NULL;
        }
    }
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, chars, length);
}

static PyObject *decode_value(Reader *r, int depth);

static PyObject *decode_str(Reader *r, Py_ssize_t n) {
    const unsigned char *s = take(r, n);
    if (s == NULL) return NULL;
    return n <= VALUE_MAX ? cached_str(value_cache, s, n) : str_from_utf8(s, n);
}

static PyObject *decode_bin(Reader *r, Py_ssize_t n) {
    const unsigned char *s = take(r, n);
    return s == NULL ? NULL : PyBytes_FromStringAndSize((const char *)s, n);
}

static PyObject *decode_ext(Reader *r, int8_t code, Py_ssize_t n) {
    const unsigned char *s = take(r, n);
    if (s == NULL) return NULL;
    if (code == EXT_NATIVE_STR) return str_from_native(s, n);
    PyObject *data = PyBytes_FromStringAndSize((const char *)s, n);
    if (data == NULL) return NULL;
    PyObject *value = PyObject_CallFunction(r->hook, "iO", (int)code, data);
    Py_DECREF(data);
    return value;
}

static PyObject *decode_array(Reader *r, Py_ssize_t n, int depth) {
    if (n > r->end - r->p) return truncated(); /* each item takes a byte: bounds the list */
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = decode_value(r, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* Map keys are strings (the writer's keys are JSON's): anything else is refused. */
static PyObject *decode_key(Reader *r) {
    const unsigned char *s;
    if (r->p >= r->end) return truncated();
    unsigned char tag = *r->p++;
    Py_ssize_t n;
    if ((tag & 0xe0) == 0xa0)
        n = tag & 0x1f;
    else if (tag == 0xd9 && (s = take(r, 1)) != NULL)
        n = s[0];
    else if (tag == 0xda && (s = take(r, 2)) != NULL)
        n = be16(s);
    else if (tag == 0xdb && (s = take(r, 4)) != NULL)
        n = (Py_ssize_t)be32(s);
    else {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a map key is not a string");
        return NULL;
    }
    if ((s = take(r, n)) == NULL) return NULL;
    return key_from_utf8(s, n);
}

static int skip_value(Reader *r, int depth);

/* A map of n pairs; with `wanted` (a set of str, else NULL) only the keys in it, the other
 * values stepped over unbuilt. */
static PyObject *decode_map(Reader *r, Py_ssize_t n, int depth, PyObject *wanted) {
    if (n > (r->end - r->p) / 2) return truncated();
#if PY_VERSION_HEX < 0x030D0000
    PyObject *dict = _PyDict_NewPresized(n);
#else
    PyObject *dict = PyDict_New();
#endif
    if (dict == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = decode_key(r);
        if (key == NULL) goto fail;
        if (wanted != NULL) {
            int keep = PySet_Contains(wanted, key);
            if (keep <= 0) {
                Py_DECREF(key);
                if (keep < 0 || skip_value(r, depth + 1) < 0) goto fail;
                continue;
            }
        }
        PyObject *value = decode_value(r, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        int failed = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed) goto fail;
    }
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *decode_value(Reader *r, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "msgpack data nested too deep");
        return NULL;
    }
    if (r->p >= r->end) return truncated();
    unsigned char tag = *r->p++;
    const unsigned char *s;
    if (tag <= 0x7f) return PyLong_FromLong(tag);
    if (tag >= 0xe0) return PyLong_FromLong((int8_t)tag);
    if ((tag & 0xe0) == 0xa0) return decode_str(r, tag & 0x1f);
    if ((tag & 0xf0) == 0x90) return decode_array(r, tag & 0x0f, depth);
    if ((tag & 0xf0) == 0x80) return decode_map(r, tag & 0x0f, depth, NULL);
    switch (tag) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xc4: return (s = take(r, 1)) ? decode_bin(r, s[0]) : NULL;
    case 0xc5: return (s = take(r, 2)) ? decode_bin(r, be16(s)) : NULL;
    case 0xc6: return (s = take(r, 4)) ? decode_bin(r, (Py_ssize_t)be32(s)) : NULL;
    case 0xc7: return (s = take(r, 2)) ? decode_ext(r, (int8_t)s[1], s[0]) : NULL;
    case 0xc8: return (s = take(r, 3)) ? decode_ext(r, (int8_t)s[2], be16(s)) : NULL;
    case 0xc9: return (s = take(r, 5)) ? decode_ext(r, (int8_t)s[4], (Py_ssize_t)be32(s)) : NULL;
    case 0xca: {
        if ((s = take(r, 4)) == NULL) return NULL;
        uint32_t bits = be32(s);
        float value;
        memcpy(&value, &bits, 4);
        return PyFloat_FromDouble(value);
    }
    case 0xcb: {
        if ((s = take(r, 8)) == NULL) return NULL;
        uint64_t bits = be64(s);
        double value;
        memcpy(&value, &bits, 8);
        return PyFloat_FromDouble(value);
    }
    case 0xcc: return (s = take(r, 1)) ? PyLong_FromLong(s[0]) : NULL;
    case 0xcd: return (s = take(r, 2)) ? PyLong_FromLong(be16(s)) : NULL;
    case 0xce: return (s = take(r, 4)) ? PyLong_FromUnsignedLong(be32(s)) : NULL;
    case 0xcf: return (s = take(r, 8)) ? PyLong_FromUnsignedLongLong(be64(s)) : NULL;
    case 0xd0: return (s = take(r, 1)) ? PyLong_FromLong((int8_t)s[0]) : NULL;
    case 0xd1: return (s = take(r, 2)) ? PyLong_FromLong((int16_t)be16(s)) : NULL;
    case 0xd2: return (s = take(r, 4)) ? PyLong_FromLong((int32_t)be32(s)) : NULL;
    case 0xd3: return (s = take(r, 8)) ? PyLong_FromLongLong((int64_t)be64(s)) : NULL;
    case 0xd4: return (s = take(r, 1)) ? decode_ext(r, (int8_t)s[0], 1) : NULL;
    case 0xd5: return (s = take(r, 1)) ? decode_ext(r, (int8_t)s[0], 2) : NULL;
    case 0xd6: return (s = take(r, 1)) ? decode_ext(r, (int8_t)s[0], 4) : NULL;
    case 0xd7: return (s = take(r, 1)) ? decode_ext(r, (int8_t)s[0], 8) : NULL;
    case 0xd8: return (s = take(r, 1)) ? decode_ext(r, (int8_t)s[0], 16) : NULL;
    case 0xd9: return (s = take(r, 1)) ? decode_str(r, s[0]) : NULL;
    case 0xda: return (s = take(r, 2)) ? decode_str(r, be16(s)) : NULL;
    case 0xdb: return (s = take(r, 4)) ? decode_str(r, (Py_ssize_t)be32(s)) : NULL;
    case 0xdc: return (s = take(r, 2)) ? decode_array(r, be16(s), depth) : NULL;
    case 0xdd: return (s = take(r, 4)) ? decode_array(r, (Py_ssize_t)be32(s), depth) : NULL;
    case 0xde: return (s = take(r, 2)) ? decode_map(r, be16(s), depth, NULL) : NULL;
    case 0xdf: return (s = take(r, 4)) ? decode_map(r, (Py_ssize_t)be32(s), depth, NULL) : NULL;
    }
    PyErr_Format(PyExc_ValueError, "invalid msgpack type byte 0x%02x", tag);
    return NULL;
}

static PyObject *py_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode(buffer, begin, end, hook)");
        return NULL;
    }
    Py_ssize_t begin = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if ((begin == -1 || end == -1) && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *value = NULL;
    if (begin < 0 || end < begin || end > view.len) {
        PyErr_SetString(PyExc_ValueError, "decode range outside the buffer");
    } else {
        Reader r = {(const unsigned char *)view.buf + begin, (const unsigned char *)view.buf + end,
                    args[3]};
        value = decode_value(&r, 0);
        if (value != NULL && r.p != r.end) {
            Py_CLEAR(value);
            PyErr_SetString(PyExc_ValueError, "msgpack data continues after its value");
        }
    }
    PyBuffer_Release(&view);
    return value;
}

static inline uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* What a block's record region is read into: its records, or their columns. */
typedef PyObject *(*RegionReader)(Reader *r, Py_ssize_t count, PyObject *wanted);

/* The region of a raw block (format/block.py's layout) read by `read`, or None for a block
 * with an arena (arrays: BlockView and msgspec decode those). ValueError for anything
 * inconsistent: the caller then decodes the block the slow way, which names the fault as
 * BlockView does. */
static PyObject *block_records(const unsigned char *raw, Py_ssize_t size, Py_ssize_t expected,
                               PyObject *hook, RegionReader read, PyObject *wanted) {
    if (size < 8) return truncated();
    Py_ssize_t count = le32(raw), arena_offset = le32(raw + 4);
    Py_ssize_t region_start = 8 + 8 * (count + 1);
    if (count != expected || region_start + 5 > arena_offset || arena_offset > size) {
        PyErr_SetString(PyExc_ValueError, "inconsistent block header");
        return NULL;
    }
    if (arena_offset != size) Py_RETURN_NONE;
    Py_ssize_t end = region_start + le32(raw + 8 + 4 * count);
    if (le32(raw + 8) != 5 || end > arena_offset) {
        PyErr_SetString(PyExc_ValueError, "block payload region is out of bounds");
        return NULL;
    }
    Reader r = {raw + region_start, raw + end, hook};
    PyObject *read_out = read(&r, count, wanted);
    if (read_out != NULL && read_out != Py_None && r.p != r.end) {
        Py_CLEAR(read_out);
        PyErr_SetString(PyExc_ValueError, "block payload region does not hold its records");
    }
    return read_out;
}

/* Step over one msgpack value without building it (bounds-checked, nesting bounded), as
 * msgspec steps over a field a projection leaves out: its contents are not checked further. */
static int skip_value(Reader *r, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "msgpack data nested too deep");
        return -1;
    }
    if (r->p >= r->end) return truncated(), -1;
    unsigned char tag = *r->p++;
    const unsigned char *s;
    Py_ssize_t n = 0, items = 0;
    if (tag <= 0x7f || tag >= 0xe0) return 0;
    if ((tag & 0xe0) == 0xa0) n = tag & 0x1f;
    else if ((tag & 0xf0) == 0x90) items = tag & 0x0f;
    else if ((tag & 0xf0) == 0x80) items = 2 * (tag & 0x0f);
    else {
        switch (tag) {
        case 0xc0: case 0xc2: case 0xc3: return 0;
        case 0xc4: case 0xd9: if (!(s = take(r, 1))) return -1; n = s[0]; break;
        case 0xc5: case 0xda: if (!(s = take(r, 2))) return -1; n = be16(s); break;
        case 0xc6: case 0xdb: if (!(s = take(r, 4))) return -1; n = (Py_ssize_t)be32(s); break;
        case 0xc7: if (!(s = take(r, 2))) return -1; n = s[0]; break; /* ext: length, then type */
        case 0xc8: if (!(s = take(r, 3))) return -1; n = be16(s); break;
        case 0xc9: if (!(s = take(r, 5))) return -1; n = (Py_ssize_t)be32(s); break;
        case 0xca: case 0xce: case 0xd2: n = 4; break;
        case 0xcb: case 0xcf: case 0xd3: n = 8; break;
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xd4: n = 2; break; /* fixext: type, then 1, 2, 4, 8 or 16 bytes */
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xdc: if (!(s = take(r, 2))) return -1; items = be16(s); break;
        case 0xdd: if (!(s = take(r, 4))) return -1; items = (Py_ssize_t)be32(s); break;
        case 0xde: if (!(s = take(r, 2))) return -1; items = 2 * (Py_ssize_t)be16(s); break;
        case 0xdf: if (!(s = take(r, 4))) return -1; items = 2 * (Py_ssize_t)be32(s); break;
        default:
            PyErr_Format(PyExc_ValueError, "invalid msgpack type byte 0x%02x", tag);
            return -1;
        }
    }
    if (items > r->end - r->p) return truncated(), -1; /* each item takes a byte */
    for (Py_ssize_t i = 0; i < items; i++)
        if (skip_value(r, depth + 1) < 0) return -1;
    return take(r, n) == NULL ? -1 : 0;
}

/* The region's list header, which must count the block's records. */
static int records_header(Reader *r, Py_ssize_t count) {
    const unsigned char *s;
    Py_ssize_t n;
    if (r->p >= r->end) return truncated(), -1;
    unsigned char tag = *r->p++;
    if ((tag & 0xf0) == 0x90) n = tag & 0x0f;
    else if (tag == 0xdc && (s = take(r, 2)) != NULL) n = be16(s);
    else if (tag == 0xdd && (s = take(r, 4)) != NULL) n = (Py_ssize_t)be32(s);
    else n = -1;
    if (n != count) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "block payload region does not hold its records");
        return -1;
    }
    if (n > r->end - r->p) return truncated(), -1; /* each record takes a byte: bounds the list */
    return 0;
}

/* A map's pair count, taken from the reader; -2 (nothing taken, no error) where the next value
 * is no map; -1 with the error set where the bytes end. */
static Py_ssize_t map_header(Reader *r) {
    const unsigned char *s;
    if (r->p >= r->end) return truncated(), -1;
    unsigned char tag = *r->p;
    if ((tag & 0xf0) == 0x80) {
        r->p++;
        return tag & 0x0f;
    }
    if (tag != 0xde && tag != 0xdf) return -2;
    r->p++;
    if (tag == 0xde) return (s = take(r, 2)) != NULL ? be16(s) : -1;
    return (s = take(r, 4)) != NULL ? (Py_ssize_t)be32(s) : -1;
}

/* The block's records; with `wanted` (a set of str, else NULL) each cut to those keys, and
 * ValueError for a record that is not a map (the reader then names it, as the Python
 * projection does). */
static PyObject *record_list(Reader *r, Py_ssize_t count, PyObject *wanted) {
    if (records_header(r, count) < 0) return NULL;
    PyObject *records = PyList_New(count);
    if (records == NULL) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record;
        if (wanted == NULL) {
            record = decode_value(r, 1);
        } else {
            Py_ssize_t n = map_header(r);
            if (n == -2) PyErr_SetString(PyExc_ValueError, "a record is not an object");
            record = n < 0 ? NULL : decode_map(r, n, 1, wanted);
        }
        if (record == NULL) {
            Py_DECREF(records);
            return NULL;
        }
        PyList_SET_ITEM(records, i, record);
    }
    return records;
}

/* The records as columns, (keys, [each key's values]), where every record is a map of the same
 * keys in the same order (no dict is made); None where one is not (the caller then builds the
 * records). */
static PyObject *column_records(Reader *r, Py_ssize_t count, PyObject *unused) {
    if (records_header(r, count) < 0) return NULL;
    PyObject *keys = NULL, *columns = NULL;
    Py_ssize_t width = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n = map_header(r);
        if (n == -2 || (i > 0 && n != width)) goto not_columns;
        if (n < 0) goto fail;
        if (i == 0) {
            if (n > (r->end - r->p) / 2) { /* each pair takes two bytes */
                truncated();
                goto fail;
            }
            /* count records of n pairs take 2 * n * count bytes: bounds the lists made below */
            if (n > 0 && count > (r->end - r->p) / (2 * n) + 1) goto not_columns;
            width = n;
            if ((keys = PyTuple_New(n)) == NULL || (columns = PyList_New(n)) == NULL) goto fail;
            for (Py_ssize_t k = 0; k < n; k++) {
                PyObject *column = PyList_New(count); /* items filled below, NULL until then */
                if (column == NULL) goto fail;
                PyList_SET_ITEM(columns, k, column);
            }
        }
        for (Py_ssize_t k = 0; k < width; k++) {
            PyObject *key = decode_key(r);
            if (key == NULL) goto fail;
            if (i == 0) {
                for (Py_ssize_t j = 0; j < k; j++) { /* a repeated key: a dict keeps one */
                    int repeated = PyUnicode_Compare(key, PyTuple_GET_ITEM(keys, j)) == 0;
                    if (repeated) {
                        Py_DECREF(key);
                        goto not_columns;
                    }
                }
                PyTuple_SET_ITEM(keys, k, key);
            } else {
                PyObject *first = PyTuple_GET_ITEM(keys, k);
                int same = key == first || PyUnicode_Compare(key, first) == 0;
                Py_DECREF(key);
                if (!same) goto not_columns;
            }
            PyObject *value = decode_value(r, 2);
            if (value == NULL) goto fail;
            PyList_SET_ITEM(PyList_GET_ITEM(columns, k), i, value);
        }
    }
    if (width <= 0) goto not_columns; /* no records, or records of no keys: no rows to count */
    PyObject *result = PyTuple_Pack(2, keys, columns);
    Py_DECREF(keys);
    Py_DECREF(columns);
    return result;
not_columns:
    Py_XDECREF(keys);
    Py_XDECREF(columns);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(keys);
    Py_XDECREF(columns);
    return NULL;
}

/* The block args[0] of args[1] records (read by `read`), the hook args[2] for extensions. */
static PyObject *read_block(PyObject *const *args, RegionReader read, PyObject *wanted) {
    Py_ssize_t expected = PyLong_AsSsize_t(args[1]);
    if (expected == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *read_out = block_records(view.buf, view.len, expected, args[2], read, wanted);
    PyBuffer_Release(&view);
    return read_out;
}

/* decode_block(raw, count, hook[, wanted]): a raw block's records (only the keys in the set
 * `wanted` of each, where given and not None), or None for one with arrays. */
static PyObject *py_decode_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode_block(raw, count, hook[, wanted])");
        return NULL;
    }
    PyObject *wanted = nargs == 4 && args[3] != Py_None ? args[3] : NULL;
    if (wanted != NULL && !PyAnySet_Check(wanted)) {
        PyErr_SetString(PyExc_TypeError, "wanted must be a set or frozenset of keys");
        return NULL;
    }
    return read_block(args, record_list, wanted);
}

/* decode_block_columns(raw, count, hook): (keys, [each key's values]) of a raw block whose
 * records are maps of the same keys in the same order; None for any other block. */
static PyObject *py_decode_block_columns(PyObject *module, PyObject *const *args,
                                         Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode_block_columns(raw, count, hook)");
        return NULL;
    }
    return read_block(args, column_records, NULL);
}

/* ---- nativize: the writer's side ---- */

typedef struct {
    unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Out;

static int out_reserve(Out *out, Py_ssize_t n) {
    if (out->size + n > out->capacity) {
        Py_ssize_t capacity = (out->capacity + n) * 2;
        unsigned char *grown = PyMem_Realloc(out->data, capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        out->data = grown;
        out->capacity = capacity;
    }
    return 0;
}

static int out_put(Out *out, const void *bytes, Py_ssize_t n) {
    if (out_reserve(out, n) < 0) return -1;
    memcpy(out->data + out->size, bytes, n);
    out->size += n;
    return 0;
}

/* msgspec's ext header: fixext for 1, 2, 4, 8, 16 bytes, else ext8/16/32 */
static int out_ext_header(Out *out, Py_ssize_t n) {
    unsigned char head[6];
    int used;
    switch (n) {
    case 1: head[0] = 0xd4; used = 1; break;
    case 2: head[0] = 0xd5; used = 1; break;
    case 4: head[0] = 0xd6; used = 1; break;
    case 8: head[0] = 0xd7; used = 1; break;
    case 16: head[0] = 0xd8; used = 1; break;
    default:
        if (n < 0x100) {
            head[0] = 0xc7;
            head[1] = (unsigned char)n;
            used = 2;
        } else if (n < 0x10000) {
            head[0] = 0xc8;
            head[1] = (unsigned char)(n >> 8);
            head[2] = (unsigned char)n;
            used = 3;
        } else if (n <= 0xFFFFFFFF) {
            head[0] = 0xc9;
            for (int i = 0; i < 4; i++) head[1 + i] = (unsigned char)(n >> (24 - 8 * i));
            used = 5;
        } else {
            PyErr_SetString(PyExc_ValueError, "string too long for a msgpack extension");
            return -1;
        }
    }
    head[used++] = EXT_NATIVE_STR;
    return out_put(out, head, used);
}

/* A non-ASCII str value: native if that takes at most 1.5 times its UTF-8 bytes. 1 if it is
 * (and written, when out is not NULL), 0 if it stays UTF-8, -1 on error. */
static int put_native(Out *out, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t chars;
    uint32_t widest;
    if (utf8_measure(s, n, &chars, &widest) < 0) {
        PyErr_SetString(PyExc_ValueError, "a string is not well-formed UTF-8");
        return -1;
    }
    int kind = widest < 0x100 ? 1 : widest < 0x10000 ? 2 : 4;
    Py_ssize_t bytes = kind * chars;
    if (2 * bytes > 3 * n) return 0;
    if (out == NULL) return 1;
    unsigned char kind_byte = (unsigned char)kind;
    if (out_ext_header(out, bytes + 1) < 0 || out_put(out, &kind_byte, 1) < 0) return -1;
    if (out_reserve(out, bytes) < 0) return -1;
    utf8_transcode(s, n, kind, out->data + out->size);
    out->size += bytes;
    return 1;
}

/* Walk one value from r (already known well formed: the writer's own msgspec output), copying
 * it to out (when out is not NULL) with its non-ASCII str values made native. *changed turns
 * 1 at the first str that would change. */
static int walk(Reader *r, Out *out, int depth, int is_key, int *changed) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "msgpack data nested too deep");
        return -1;
    }
    const unsigned char *start = r->p, *s;
    if (r->p >= r->end) return truncated(), -1;
    unsigned char tag = *r->p++;
    Py_ssize_t items = -1, pairs = -1, skip = 0, str = -1;
    if (tag <= 0x7f || tag >= 0xe0 || tag == 0xc0 || tag == 0xc2 || tag == 0xc3) {
    } else if ((tag & 0xe0) == 0xa0) str = tag & 0x1f;
    else if ((tag & 0xf0) == 0x90) items = tag & 0x0f;
    else if ((tag & 0xf0) == 0x80) pairs = tag & 0x0f;
    else {
        switch (tag) {
        case 0xc4: if (!(s = take(r, 1))) return -1; skip = s[0]; break;
        case 0xc5: if (!(s = take(r, 2))) return -1; skip = be16(s); break;
        case 0xc6: if (!(s = take(r, 4))) return -1; skip = be32(s); break;
        case 0xc7: if (!(s = take(r, 2))) return -1; skip = s[0]; break;
        case 0xc8: if (!(s = take(r, 3))) return -1; skip = be16(s); break;
        case 0xc9: if (!(s = take(r, 5))) return -1; skip = be32(s); break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xd4: skip = 2; break;
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xd9: if (!(s = take(r, 1))) return -1; str = s[0]; break;
        case 0xda: if (!(s = take(r, 2))) return -1; str = be16(s); break;
        case 0xdb: if (!(s = take(r, 4))) return -1; str = be32(s); break;
        case 0xdc: if (!(s = take(r, 2))) return -1; items = be16(s); break;
        case 0xdd: if (!(s = take(r, 4))) return -1; items = be32(s); break;
        case 0xde: if (!(s = take(r, 2))) return -1; pairs = be16(s); break;
        case 0xdf: if (!(s = take(r, 4))) return -1; pairs = be32(s); break;
        default:
            PyErr_Format(PyExc_ValueError, "invalid msgpack type byte 0x%02x", tag);
            return -1;
        }
    }
    if (str >= 0) {
        const unsigned char *text = take(r, str);
        if (text == NULL) return -1;
        if (!is_key && !is_ascii(text, str)) {
            int native = put_native(out, text, str); /* out NULL: only whether it would */
            if (native < 0) return -1;
            if (native) {
                *changed = 1;
                return 0;
            }
        }
        return out == NULL ? 0 : out_put(out, start, r->p - start);
    }
    if (items >= 0 || pairs >= 0) {
        if (out != NULL && out_put(out, start, r->p - start) < 0) return -1;
        Py_ssize_t count = items >= 0 ? items : 2 * pairs;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (walk(r, out, depth + 1, pairs >= 0 && i % 2 == 0, changed) < 0) return -1;
            if (out == NULL && *changed) return 0;
        }
        return 0;
    }
    if (take(r, skip) == NULL) return -1;
    return out == NULL ? 0 : out_put(out, start, r->p - start);
}

static PyObject *py_nativize(PyObject *module, PyObject *payload) {
    if (!PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "nativize() takes bytes");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    Reader probe = {data, data + size, NULL};
    int changed = 0;
    if (walk(&probe, NULL, 0, 0, &changed) < 0) return NULL;
    if (!changed) {
        Py_INCREF(payload);
        return payload;
    }
    Out out = {NULL, 0, 0};
    Reader r = {data, data + size, NULL};
    PyObject *result = NULL;
    /* native strings take at most 1.5 times their UTF-8 bytes, plus a header byte or two */
    if (out_reserve(&out, size + size / 2 + 64) == 0 && walk(&r, &out, 0, 0, &changed) == 0)
        result = PyBytes_FromStringAndSize((const char *)out.data, out.size);
    PyMem_Free(out.data);
    return result;
}

/* ---- the block index: whether every check of layout.check_index passes ---- */

static inline uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
/* index_fits(index, data_end, record_count, max_raw_size, header_size, raw_cap, records_cap,
 * block_fixed, min_record_bytes, known_flags) -> bool: True where layout.check_index would
 * find nothing wrong with `index` (BLOCK_ENTRY rows, 48 bytes each), in one pass instead of ~25
 * numpy calls (most of a cold open). False for anything else, an argument it cannot read
 * included: the caller then runs those checks, which name what is wrong. */
static PyObject *py_index_fits(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "index_fits() takes 10 arguments");
        return NULL;
    }
    unsigned long long v[9];
    for (int i = 0; i < 9; i++) {
        v[i] = PyLong_AsUnsignedLongLong(args[i + 1]);
        if (PyErr_Occurred()) { /* negative or too large: not for this fast path */
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
    }
    uint64_t data_end = v[0], record_count = v[1], max_raw = v[2], header_size = v[3],
             raw_cap = v[4], records_cap = v[5], block_fixed = v[6], min_record = v[7],
             known_flags = v[8];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    int fits = view.len % 48 == 0;
    Py_ssize_t rows = view.len / 48;
    const unsigned char *row = (const unsigned char *)view.buf;
    uint64_t total = 0, previous_end = 0;
    if (rows == 0) fits = fits && record_count == 0;
    for (Py_ssize_t i = 0; fits && i < rows; i++, row += 48) {
        uint64_t offset = le64(row), stored = le64(row + 8), raw = le64(row + 16),
                 first = le64(row + 24);
        uint32_t count = le32(row + 32), flags = le32(row + 36);
        fits = raw <= raw_cap && count <= records_cap && count != 0 &&
               raw >= block_fixed + min_record * count && stored <= raw + raw / 128 + 1024 &&
               offset <= data_end && stored <= data_end && raw <= max_raw &&
               (flags & ~known_flags) == 0 && first == total &&
               (i == 0 ? offset >= header_size : offset >= previous_end);
        previous_end = offset + stored; /* both at most data_end: no overflow */
        total += count;
    }
    if (fits && rows > 0) fits = previous_end <= data_end && total == record_count;
    PyBuffer_Release(&view);
    return PyBool_FromLong(fits);
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_FASTCALL,
     "decode(buffer, begin, end, hook): the msgpack value in buffer[begin:end]"},
    {"decode_block", (PyCFunction)(void (*)(void))py_decode_block, METH_FASTCALL,
     "decode_block(raw, count, hook): a raw block's records, None for one with arrays"},
    {"decode_block_columns", (PyCFunction)(void (*)(void))py_decode_block_columns, METH_FASTCALL,
     "decode_block_columns(raw, count, hook): a block's records as (keys, columns), or None"},
    {"index_fits", (PyCFunction)(void (*)(void))py_index_fits, METH_FASTCALL,
     "index_fits(index, data_end, record_count, max_raw_size, *limits): whether the block "
     "index passes every check"},
    {"nativize", py_nativize, METH_O,
     "nativize(payload): the payload with its non-ASCII str values as native strings"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_speedups", "shardpack's C record codec (optional)", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module_def); }
