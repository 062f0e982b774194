/* beamish.dist._etf_c: a C accelerator for the hot paths of dist/etf.py.
 *
 * etf.py stays the reference and the fallback. This module encodes and
 * decodes the term shapes that fill distribution traffic (atoms, small
 * integers, tuples, lists, maps, binaries, pids, references) and hands
 * everything else back to the pure-Python code:
 *
 *   - the encoder calls etf._enc(term, out, table) for any value whose exact
 *     type it does not know (subclasses, structs, ports, funs, FrozenList...)
 *     or whose fields are unusual (a pid id beyond 32 bits, a NaN);
 *   - the decoder calls etf._DECODERS[tag](d, data, pos + 1, depth) for any
 *     tag it does not handle and for anything awkward (a map whose keys
 *     Python cannot hash or that collide, a struct map, a malformed ref...),
 *     so that the Python code produces the exact value or DecodeError.
 *
 * The rule that keeps both implementations identical: when in doubt, fall
 * back. Every length read from the input is checked against the bytes left
 * before it is used; truncation raises etf.DecodeError, never IndexError.
 *
 * Recursion in both directions goes through Py_EnterRecursiveCall, so a
 * self-containing list or an input nested past the interpreter's limit
 * raises RecursionError (which etf.py turns into EncodeError/DecodeError).
 * Past C_DEPTH_MAX containers nested in C, the rest of a term goes to the
 * Python code, whose calls do not grow the C stack: a program that raises
 * the recursion limit gets the pure-Python results, never a stack overflow.
 *
 * State: the classes and functions handed over by init() (set once), three
 * small direct-mapped caches (atoms by their UTF-8 or Latin-1 bytes, pids by
 * their encoded bytes), which only ever hold values the decoder has already
 * built once, and the options of the last etf._Decoder seen.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Tags (erts/doc/src/erl_ext_dist.xml). */
#define NEW_FLOAT_EXT 70
#define BIT_BINARY_EXT 77
#define NEW_PID_EXT 88
#define NEWER_REFERENCE_EXT 90
#define SMALL_INTEGER_EXT 97
#define INTEGER_EXT 98
#define ATOM_EXT 100
#define SMALL_TUPLE_EXT 104
#define LARGE_TUPLE_EXT 105
#define NIL_EXT 106
#define STRING_EXT 107
#define LIST_EXT 108
#define BINARY_EXT 109
#define SMALL_BIG_EXT 110
#define SMALL_ATOM_EXT 115
#define MAP_EXT 116
#define ATOM_UTF8_EXT 118
#define SMALL_ATOM_UTF8_EXT 119

/* Containers of at most this many elements are allocated at their final
 * size; longer ones grow as they are filled, so that a hostile count that
 * the input cannot back costs memory only for what was actually read. */
#define PREALLOC_MAX 4096

/* Containers nested in C before the rest goes to etf.py (see the header);
 * a few hundred bytes of C stack each. */
#define C_DEPTH_MAX 1000

/* --- what init() hands over ------------------------------------------------ */

static int initialized = 0;
static PyTypeObject *atom_type, *pid_type, *ref_type, *improper_type, *frozen_list_type;
static PyObject *bit_binary_type;  /* called: its __post_init__ validates */
static PyObject *decode_error;     /* etf.DecodeError */
static PyObject *py_enc;           /* etf._enc(term, out, table) */
static PyObject *py_decoders;      /* tuple(etf._DECODERS) */
static PyObject *py_new_atom;      /* etf._new_atom(d, raw, encoding, pos) */
static PyObject *utf8_atoms, *latin1_atoms; /* etf._UTF8_ATOMS, etf._LATIN1_ATOMS */
static PyObject *struct_key;       /* Atom("__struct__") */
static PyObject *s_struct_key_text, *s_utf8, *s_latin1, *s_max_depth, *s_binaries, *s_peer, *s_structs, *s_by_name;
static PyObject *s_left, *s_min_objects, *s_bytes_per_object;

/* Byte offsets of the slots of Pid, Ref and ImproperList (all __slots__
 * classes): read and written directly, as the member descriptors would. */
static Py_ssize_t off_pid_node, off_pid_id, off_pid_serial, off_pid_creation, off_pid_hash;
static Py_ssize_t off_ref_node, off_ref_creation, off_ref_ids, off_ref_hash;
static Py_ssize_t off_il_items, off_il_tail;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* --- caches ----------------------------------------------------------------- */

/* A direct-mapped cache from raw bytes to a decoded value: the same few
 * atoms and pids fill a connection's traffic, and a hit skips building a
 * bytes key and a dict lookup (atoms) or five objects (pids). */
typedef struct {
    PyObject *key;   /* bytes */
    PyObject *value;
} CacheEntry;

#define ATOM_CACHE_SIZE 1024
#define PID_CACHE_SIZE 256
static CacheEntry utf8_cache[ATOM_CACHE_SIZE], latin1_cache[ATOM_CACHE_SIZE], pid_cache[PID_CACHE_SIZE];

static inline uint32_t
hash_bytes(const unsigned char *p, Py_ssize_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

/* The cached value for `p[:n]` (a borrowed reference), or NULL. */
static inline PyObject *
cache_get(CacheEntry *e, const unsigned char *p, Py_ssize_t n)
{
    if (e->key != NULL && PyBytes_GET_SIZE(e->key) == n && memcmp(PyBytes_AS_STRING(e->key), p, n) == 0) {
        return e->value;
    }
    return NULL;
}

static int
cache_put(CacheEntry *e, const unsigned char *p, Py_ssize_t n, PyObject *value)
{
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, n);
    if (key == NULL) {
        return -1;
    }
    Py_XSETREF(e->key, key);
    Py_INCREF(value);
    Py_XSETREF(e->value, value);
    return 0;
}

static void
cache_clear(CacheEntry *c, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        Py_CLEAR(c[i].key);
        Py_CLEAR(c[i].value);
    }
}

/* --- big-endian reads --------------------------------------------------------- */

static inline uint16_t
rd16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t
rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ============================================================================
 * Decoding
 * ========================================================================== */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    PyObject *data;      /* the bytes being decoded (borrowed) */
    PyObject *d;         /* the etf._Decoder with this decode's options (borrowed) */
    Py_ssize_t max_depth;
    int mode;            /* binaries: 0 "bytes", 1 "str", 2 "utf8_or_bytes" */
    int peer;
    PyObject *by_name;   /* d.structs.by_name, fetched at the first map (owned) */
    int nesting;         /* containers being decoded in C */
    Py_ssize_t budget;   /* objects this decode may build (etf.py's "Bounds") */
    Py_ssize_t left;     /* of which this many are left */
    PyObject *fork;      /* d.fork(budget, left), made at the first fallback (owned) */
} Dec;

static PyObject *dec_term(Dec *s, Py_ssize_t *pos, Py_ssize_t depth);

static PyObject *
dec_error(Py_ssize_t offset, const char *format, ...)
{
    va_list vargs;
    va_start(vargs, format);
    PyObject *msg = PyUnicode_FromFormatV(format, vargs);
    va_end(vargs);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(decode_error, "On", msg, offset);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject(decode_error, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
truncated(Dec *s)
{
    return dec_error(s->len, "truncated input");
}

static PyObject *
too_deep(Dec *s, Py_ssize_t pos)
{
    return dec_error(pos, "nesting deeper than Limits.max_depth=%zd", s->max_depth);
}

static Py_ssize_t last_min_objects, last_bytes_per_object;

/* etf._over_budget, word for word. */
static PyObject *
over_budget(Dec *s, Py_ssize_t pos)
{
    return dec_error(pos,
                     "term builds more than %zd objects (Limits: max(min_objects=%zd, "
                     "input bytes // bytes_per_object=%zd))",
                     s->budget, last_min_objects, last_bytes_per_object);
}

/* etf._take: count one object (its tag at `pos`), or fail the decode. */
#define TAKE(s, pos)                       \
    do {                                   \
        if (--(s)->left < 0) {             \
            return over_budget((s), (pos)); \
        }                                  \
    } while (0)

/* The pure-Python decoder of the tag at `*pos`, with the same options and
 * what is left of the budget: it counts on a fork of the decoder made for
 * this decode (the decoder itself is shared), whose count comes back. */
static PyObject *
dec_fallback(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    PyObject *fn = PyTuple_GET_ITEM(py_decoders, s->buf[*pos]);
    PyObject *left = PyLong_FromSsize_t(s->left);
    if (left == NULL) {
        return NULL;
    }
    int rc;
    if (s->fork == NULL) {
        s->fork = PyObject_CallMethod(s->d, "fork", "nO", s->budget, left);
        rc = s->fork == NULL ? -1 : 0;
    }
    else {
        rc = PyObject_SetAttr(s->fork, s_left, left);
    }
    Py_DECREF(left);
    if (rc < 0) {
        return NULL;
    }
    PyObject *p = PyLong_FromSsize_t(*pos + 1);
    PyObject *dp = PyLong_FromSsize_t(depth);
    PyObject *res = NULL;
    if (p != NULL && dp != NULL) {
        PyObject *args[4] = {s->fork, s->data, p, dp};
        res = PyObject_Vectorcall(fn, args, 4, NULL);
    }
    Py_XDECREF(p);
    Py_XDECREF(dp);
    if (res == NULL) {
        return NULL;
    }
    if ((left = PyObject_GetAttr(s->fork, s_left)) == NULL) {
        Py_DECREF(res);
        return NULL;
    }
    s->left = PyLong_AsSsize_t(left);
    Py_DECREF(left);
    if (s->left == -1 && PyErr_Occurred()) {
        Py_DECREF(res);
        return NULL;
    }
    if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "etf decoder did not return (term, offset)");
        return NULL;
    }
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 1));
    if (end == -1 && PyErr_Occurred()) {
        Py_DECREF(res);
        return NULL;
    }
    PyObject *term = Py_NewRef(PyTuple_GET_ITEM(res, 0));
    Py_DECREF(res);
    *pos = end;
    return term;
}

/* The atom (or True/False/None) whose text is buf[p:p+n]; `at` is the
 * offset etf.py reports in errors. Misses go through etf._new_atom, so the
 * atom table, Limits.max_atoms and the shared dict caches behave as in
 * Python. */
static PyObject *
dec_atom_text(Dec *s, Py_ssize_t p, Py_ssize_t n, int latin1, Py_ssize_t at)
{
    const unsigned char *raw = s->buf + p;
    CacheEntry *cache = latin1 ? latin1_cache : utf8_cache;
    CacheEntry *e = &cache[hash_bytes(raw, n) & (ATOM_CACHE_SIZE - 1)];
    PyObject *value = cache_get(e, raw, n);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)raw, n);
    if (key == NULL) {
        return NULL;
    }
    value = PyDict_GetItemWithError(latin1 ? latin1_atoms : utf8_atoms, key);
    if (value != NULL) {
        Py_INCREF(value);
    }
    else if (!PyErr_Occurred()) {
        PyObject *where = PyLong_FromSsize_t(at);
        if (where != NULL) {
            PyObject *args[4] = {s->d, key, latin1 ? s_latin1 : s_utf8, where};
            value = PyObject_Vectorcall(py_new_atom, args, 4, NULL);
            Py_DECREF(where);
        }
    }
    Py_DECREF(key);
    if (value != NULL && cache_put(e, raw, n, value) < 0) {
        Py_CLEAR(value);
    }
    return value;
}

/* An atom tag at `*pos` (any of the four text encodings). */
static PyObject *
dec_atom(Dec *s, Py_ssize_t *pos)
{
    Py_ssize_t p = *pos;
    unsigned char tag = s->buf[p];
    Py_ssize_t n, start;
    if (tag == SMALL_ATOM_UTF8_EXT || tag == SMALL_ATOM_EXT) {
        if (s->len - p < 2) {
            return truncated(s);
        }
        n = s->buf[p + 1];
        start = p + 2;
    }
    else {
        if (s->len - p < 3) {
            return truncated(s);
        }
        n = rd16(s->buf + p + 1);
        start = p + 3;
    }
    if (n > s->len - start) {
        return dec_error(p + 1, "atom runs past the end of the input");
    }
    PyObject *value = dec_atom_text(s, start, n, tag == SMALL_ATOM_EXT || tag == ATOM_EXT, p + 1);
    if (value != NULL) {
        *pos = start + n;
    }
    return value;
}

/* The node atom of a pid or reference at `*pos`, or NULL without an error
 * set when it is not a plain UTF-8 atom (the caller then falls back). */
static PyObject *
dec_node(Dec *s, Py_ssize_t *pos)
{
    if (*pos >= s->len) {
        return NULL;
    }
    unsigned char tag = s->buf[*pos];
    if (tag != SMALL_ATOM_UTF8_EXT && tag != ATOM_UTF8_EXT) {
        return NULL;
    }
    Py_ssize_t p = *pos;
    PyObject *node = dec_atom(s, &p);
    if (node == NULL) {
        PyErr_Clear(); /* the fallback raises the same error, with etf.py's words */
        return NULL;
    }
    if (Py_TYPE(node) != atom_type) {
        Py_DECREF(node); /* a node named true/false/nil: etf.py's _as_atom */
        return NULL;
    }
    *pos = p;
    return node;
}

static PyObject *
new_pid(PyObject *node, uint32_t id, uint32_t serial, uint32_t creation)
{
    PyObject *pid = pid_type->tp_alloc(pid_type, 0);
    if (pid == NULL) {
        return NULL;
    }
    PyObject *i = PyLong_FromUnsignedLong(id);
    PyObject *sr = PyLong_FromUnsignedLong(serial);
    PyObject *c = PyLong_FromUnsignedLong(creation);
    if (i == NULL || sr == NULL || c == NULL) {
        goto fail;
    }
    SLOT(pid, off_pid_node) = Py_NewRef(node);
    SLOT(pid, off_pid_id) = i;
    SLOT(pid, off_pid_serial) = sr;
    SLOT(pid, off_pid_creation) = c;
    i = sr = c = NULL;
    /* Pid.__init__: self._hash = hash((id, serial)) */
    PyObject *t = PyTuple_Pack(2, SLOT(pid, off_pid_id), SLOT(pid, off_pid_serial));
    if (t == NULL) {
        goto fail;
    }
    Py_hash_t h = PyObject_Hash(t);
    Py_DECREF(t);
    if (h == -1 && PyErr_Occurred()) {
        goto fail;
    }
    if ((SLOT(pid, off_pid_hash) = PyLong_FromSsize_t(h)) == NULL) {
        goto fail;
    }
    return pid;
fail:
    Py_XDECREF(i);
    Py_XDECREF(sr);
    Py_XDECREF(c);
    Py_DECREF(pid);
    return NULL;
}

static PyObject *
dec_new_pid(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    Py_ssize_t p = *pos + 1;
    if (p + 1 < s->len && s->buf[p] == SMALL_ATOM_UTF8_EXT) {
        Py_ssize_t size = 2 + s->buf[p + 1] + 12;
        if (size <= s->len - p) {
            CacheEntry *e = &pid_cache[hash_bytes(s->buf + p, size) & (PID_CACHE_SIZE - 1)];
            PyObject *pid = cache_get(e, s->buf + p, size);
            if (pid != NULL) {
                *pos = p + size;
                return Py_NewRef(pid);
            }
            PyObject *node = dec_node(s, &p);
            if (node == NULL) {
                return PyErr_Occurred() ? NULL : dec_fallback(s, pos, depth);
            }
            const unsigned char *b = s->buf + p;
            pid = new_pid(node, rd32(b), rd32(b + 4), rd32(b + 8));
            Py_DECREF(node);
            if (pid == NULL || cache_put(e, s->buf + *pos + 1, size, pid) < 0) {
                Py_XDECREF(pid);
                return NULL;
            }
            *pos = p + 12;
            return pid;
        }
    }
    return dec_fallback(s, pos, depth);
}

static PyObject *
dec_newer_ref(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    Py_ssize_t p = *pos + 1;
    if (s->len - p < 3) {
        return dec_fallback(s, pos, depth);
    }
    Py_ssize_t n = rd16(s->buf + p);
    if (n < 1 || n > 5) {
        return dec_fallback(s, pos, depth);
    }
    p += 2;
    PyObject *node = dec_node(s, &p);
    if (node == NULL) {
        return PyErr_Occurred() ? NULL : dec_fallback(s, pos, depth);
    }
    if (s->len - p < 4 + 4 * n) {
        Py_DECREF(node);
        return dec_fallback(s, pos, depth);
    }
    uint32_t creation = rd32(s->buf + p);
    p += 4;
    PyObject *ids = PyTuple_New(n);
    PyObject *ref = NULL, *cr = NULL;
    if (ids == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *id = PyLong_FromUnsignedLong(rd32(s->buf + p + 4 * i));
        if (id == NULL) {
            goto fail;
        }
        PyTuple_SET_ITEM(ids, i, id);
    }
    /* Ref.__init__: self._hash = hash(ids) */
    Py_hash_t h = PyObject_Hash(ids);
    if (h == -1 && PyErr_Occurred()) {
        goto fail;
    }
    if ((cr = PyLong_FromUnsignedLong(creation)) == NULL) {
        goto fail;
    }
    PyObject *hv = PyLong_FromSsize_t(h);
    if (hv == NULL) {
        goto fail;
    }
    ref = ref_type->tp_alloc(ref_type, 0);
    if (ref == NULL) {
        Py_DECREF(hv);
        goto fail;
    }
    SLOT(ref, off_ref_node) = node;
    SLOT(ref, off_ref_creation) = cr;
    SLOT(ref, off_ref_ids) = ids;
    SLOT(ref, off_ref_hash) = hv;
    *pos = p + 4 * n;
    return ref;
fail:
    Py_DECREF(node);
    Py_XDECREF(ids);
    Py_XDECREF(cr);
    return NULL;
}

/* A binary's bytes as the `binaries` mode wants them (etf._binary). */
static PyObject *
dec_binary_value(Dec *s, Py_ssize_t p, Py_ssize_t n)
{
    const char *raw = (const char *)s->buf + p;
    if (s->mode != 0) {
        PyObject *text = PyUnicode_DecodeUTF8(raw, n, NULL);
        if (text != NULL) {
            return text;
        }
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return NULL;
        }
        PyErr_Clear();
        if (s->mode == 1) {
            return dec_error(p, "binary is not valid UTF-8 (decoding with binaries='str')");
        }
    }
    return PyBytes_FromStringAndSize(raw, n);
}

static PyObject *
new_improper(PyObject *items, PyObject *tail)
{
    /* etf._improper: the instance built directly, as object.__new__ + the slot setters. */
    PyObject *il = improper_type->tp_alloc(improper_type, 0);
    if (il != NULL) {
        SLOT(il, off_il_items) = Py_NewRef(items);
        SLOT(il, off_il_tail) = Py_NewRef(tail);
    }
    return il;
}

/* The list items, then its tail: etf._dec_list's rules for [a | [b]] and [ | T]. */
static PyObject *
dec_list(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    Py_ssize_t start = *pos;
    if (s->len - start < 5) {
        return truncated(s);
    }
    TAKE(s, start);
    long long n = rd32(s->buf + start + 1); /* 64 bits: a count near 2^32 stays positive */
    Py_ssize_t p = start + 5;
    if (depth >= s->max_depth) {
        return too_deep(s, start);
    }
    if (n > s->len - p) {
        return dec_error(start, "list of %lld elements runs past the end of the input", n);
    }
    PyObject *items = PyList_New(n <= PREALLOC_MAX ? n : 0);
    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = dec_term(s, &p, depth + 1);
        if (item == NULL) {
            goto fail;
        }
        if (n <= PREALLOC_MAX) {
            PyList_SET_ITEM(items, i, item);
        }
        else {
            int rc = PyList_Append(items, item);
            Py_DECREF(item);
            if (rc < 0) {
                goto fail;
            }
        }
    }
    if (p >= s->len) {
        truncated(s);
        goto fail;
    }
    if (s->buf[p] == NIL_EXT) {
        *pos = p + 1;
        return items;
    }
    PyObject *tail = dec_term(s, &p, depth + 1);
    if (tail == NULL) {
        goto fail;
    }
    PyObject *result;
    if (PyList_CheckExact(tail)) {
        result = PyNumber_Add(items, tail);
    }
    else if (n == 0) {
        result = Py_NewRef(tail);
    }
    else if (Py_TYPE(tail) == improper_type) {
        PyObject *joined = PyNumber_Add(items, SLOT(tail, off_il_items));
        result = joined == NULL ? NULL : new_improper(joined, SLOT(tail, off_il_tail));
        Py_XDECREF(joined);
    }
    else {
        /* etf._dec_list counts the ImproperList: 48 bytes more. */
        result = --s->left < 0 ? over_budget(s, start) : new_improper(items, tail);
    }
    Py_DECREF(tail);
    Py_DECREF(items);
    if (result != NULL) {
        *pos = p;
    }
    return result;
fail:
    Py_DECREF(items);
    return NULL;
}

static PyObject *
dec_tuple(Dec *s, Py_ssize_t *pos, Py_ssize_t depth, int large)
{
    Py_ssize_t start = *pos;
    long long n;
    Py_ssize_t p;
    if (large) {
        if (s->len - start < 5) {
            return truncated(s);
        }
        n = rd32(s->buf + start + 1);
        p = start + 5;
    }
    else {
        if (s->len - start < 2) {
            return truncated(s);
        }
        n = s->buf[start + 1];
        p = start + 2;
    }
    if (n > 0) {
        TAKE(s, start);
    }
    if (depth >= s->max_depth) {
        return too_deep(s, start);
    }
    if (n > s->len - p) {
        if (!large) {
            return truncated(s);
        }
        return dec_error(start, "tuple of %lld elements runs past the end of the input", n);
    }
    if (n > PREALLOC_MAX) {
        PyObject *items = PyList_New(0);
        if (items == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = dec_term(s, &p, depth + 1);
            if (item == NULL || PyList_Append(items, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(items);
                return NULL;
            }
            Py_DECREF(item);
        }
        PyObject *t = PyList_AsTuple(items);
        Py_DECREF(items);
        if (t != NULL) {
            *pos = p;
        }
        return t;
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = dec_term(s, &p, depth + 1);
        if (item == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, item);
    }
    *pos = p;
    return t;
}

/* etf._FLOOD_KEYS: maps of more keys are checked for hash flooding, and
 * refused if more keys than this share one hash (etf.py's "Bounds"). */
#define FLOOD_KEYS 16

static int
cmp_hash(const void *a, const void *b)
{
    Py_hash_t x = *(const Py_hash_t *)a, y = *(const Py_hash_t *)b;
    return (x > y) - (x < y);
}

/* The most keys of `pairs` (key, value, key, value...) that share one
 * hash, by sorting their hashes: nothing goes into a dict before the map is
 * known to be safe. -2 without an error if a key cannot be hashed (etf.py
 * freezes it), -1 with an error. */
static Py_ssize_t
most_sharing_a_hash(PyObject *pairs)
{
    Py_ssize_t n = PyList_GET_SIZE(pairs) / 2;
    Py_hash_t *h = PyMem_New(Py_hash_t, n);
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((h[i] = PyObject_Hash(PyList_GET_ITEM(pairs, 2 * i))) == -1) {
            PyMem_Free(h);
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return -1;
            }
            PyErr_Clear();
            return -2;
        }
    }
    qsort(h, n, sizeof *h, cmp_hash);
    Py_ssize_t most = n > 0, run = 1;
    for (Py_ssize_t i = 1; i < n; i++) {
        run = h[i] == h[i - 1] ? run + 1 : 1;
        if (run > most) {
            most = run;
        }
    }
    PyMem_Free(h);
    return most;
}

static PyObject *
dec_map(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    Py_ssize_t start = *pos;
    if (s->len - start < 5) {
        return truncated(s);
    }
    /* What a fallback to etf.py below must start from: it counts the map again. */
    Py_ssize_t left_before = s->left;
    TAKE(s, start);
    long long n = rd32(s->buf + start + 1);
    Py_ssize_t p = start + 5;
    if (depth >= s->max_depth) {
        return too_deep(s, start);
    }
    if (n > (s->len - p) / 2) {
        return dec_error(start, "map of %lld pairs runs past the end of the input", n);
    }
    PyObject *pairs = NULL;
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    if (n > FLOOD_KEYS) {
        /* Grown as read, not sized by n: a count the input cannot back costs nothing. */
        if ((pairs = PyList_New(0)) == NULL) {
            goto fail;
        }
        for (Py_ssize_t i = 0; i < 2 * n; i++) {
            PyObject *item = dec_term(s, &p, depth + 1);
            if (item == NULL) {
                goto fail;
            }
            int rc = PyList_Append(pairs, item);
            Py_DECREF(item);
            if (rc < 0) {
                goto fail;
            }
        }
        Py_ssize_t most = most_sharing_a_hash(pairs);
        if (most == -2) {
            goto python;
        }
        if (most < 0) {
            goto fail;
        }
        if (most > FLOOD_KEYS) {
            dec_error(start, "map of %lld keys of which %zd share one hash (hash flooding)", n, most);
            goto fail;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t size = PyDict_GET_SIZE(result);
            if (PyDict_SetItem(result, PyList_GET_ITEM(pairs, 2 * i), PyList_GET_ITEM(pairs, 2 * i + 1)) < 0) {
                goto fail;
            }
            if (PyDict_GET_SIZE(result) == size) {
                goto python; /* keys equal in Python: etf.py raises DecodeError */
            }
        }
        Py_CLEAR(pairs);
    }
    for (Py_ssize_t i = 0; i < n && n <= FLOOD_KEYS; i++) {
        PyObject *key = dec_term(s, &p, depth + 1);
        if (key == NULL) {
            goto fail;
        }
        PyObject *value = dec_term(s, &p, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        Py_ssize_t size = PyDict_GET_SIZE(result);
        int rc = PyDict_SetItem(result, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                goto fail;
            }
            /* An unhashable key: etf.py freezes it (FrozenList, FrozenMap). */
            PyErr_Clear();
            goto python;
        }
        if (PyDict_GET_SIZE(result) == size) {
            goto python; /* keys equal in Python: etf.py raises DecodeError */
        }
    }
    if (n > 0) {
        if (s->by_name == NULL) {
            PyObject *structs = PyObject_GetAttr(s->d, s_structs);
            if (structs == NULL) {
                goto fail;
            }
            s->by_name = PyObject_GetAttr(structs, s_by_name);
            Py_DECREF(structs);
            if (s->by_name == NULL) {
                goto fail;
            }
        }
        if (PyObject_IsTrue(s->by_name)) {
            int has = PyDict_Contains(result, struct_key);
            if (has < 0) {
                goto fail;
            }
            if (has) {
                goto python; /* maybe a registered struct: etf._to_struct */
            }
        }
    }
    *pos = p;
    return result;
python:
    Py_XDECREF(pairs);
    Py_DECREF(result);
    s->left = left_before;
    return dec_fallback(s, pos, depth);
fail:
    Py_XDECREF(pairs);
    Py_DECREF(result);
    return NULL;
}

static PyObject *
dec_container(Dec *s, Py_ssize_t *pos, Py_ssize_t depth, unsigned char tag)
{
    if (s->nesting >= C_DEPTH_MAX) {
        return dec_fallback(s, pos, depth);
    }
    if (Py_EnterRecursiveCall(" while decoding an Erlang term")) {
        return NULL;
    }
    s->nesting++;
    PyObject *r = tag == LIST_EXT  ? dec_list(s, pos, depth)
                  : tag == MAP_EXT ? dec_map(s, pos, depth)
                                   : dec_tuple(s, pos, depth, tag == LARGE_TUPLE_EXT);
    s->nesting--;
    Py_LeaveRecursiveCall();
    return r;
}

/* The term whose tag is at `*pos`; advances `*pos` past it. `depth` is
 * the number of containers around it, as etf.py counts. */
static PyObject *
dec_term(Dec *s, Py_ssize_t *pos, Py_ssize_t depth)
{
    Py_ssize_t p = *pos;
    if (p >= s->len) {
        return truncated(s);
    }
    const unsigned char *b = s->buf + p;
    Py_ssize_t left = s->len - p;
    PyObject *r;
    switch (b[0]) {
    case SMALL_INTEGER_EXT:
        if (left < 2) {
            return truncated(s);
        }
        *pos = p + 2;
        return PyLong_FromLong(b[1]);
    case INTEGER_EXT:
        if (left < 5) {
            return truncated(s);
        }
        *pos = p + 5;
        return PyLong_FromLong((int32_t)rd32(b + 1));
    case SMALL_BIG_EXT: {
        /* Up to 64 bits here; longer ones and bad signs go to etf.py. */
        if (left < 3 || b[1] > 8 || b[2] > 1 || left < 3 + b[1]) {
            return dec_fallback(s, pos, depth);
        }
        TAKE(s, p);
        unsigned long long mag = 0;
        for (int i = b[1] - 1; i >= 0; i--) {
            mag = (mag << 8) | b[3 + i];
        }
        r = PyLong_FromUnsignedLongLong(mag);
        if (r != NULL && b[2]) {
            Py_SETREF(r, PyNumber_Negative(r));
        }
        if (r != NULL) {
            *pos = p + 3 + b[1];
        }
        return r;
    }
    case NEW_FLOAT_EXT: {
        if (left < 9) {
            return truncated(s);
        }
        uint64_t bits = ((uint64_t)rd32(b + 1) << 32) | rd32(b + 5);
        double value;
        memcpy(&value, &bits, sizeof value);
        if (!isfinite(value)) {
            return dec_fallback(s, pos, depth); /* etf.py's "not finite" error */
        }
        TAKE(s, p);
        *pos = p + 9;
        return PyFloat_FromDouble(value);
    }
    case SMALL_ATOM_UTF8_EXT:
    case ATOM_UTF8_EXT:
    case SMALL_ATOM_EXT:
    case ATOM_EXT:
        return dec_atom(s, pos);
    case SMALL_TUPLE_EXT:
    case LARGE_TUPLE_EXT:
    case LIST_EXT:
    case MAP_EXT:
        return dec_container(s, pos, depth, b[0]);
    case NIL_EXT:
        TAKE(s, p);
        *pos = p + 1;
        return PyList_New(0);
    case STRING_EXT: {
        TAKE(s, p);
        if (left < 3) {
            return truncated(s);
        }
        Py_ssize_t n = rd16(b + 1);
        if (n > left - 3) {
            return dec_error(p + 3, "string of %zd bytes runs past the end of the input (%zd left)", n, left - 3);
        }
        r = PyList_New(n);
        if (r == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyList_SET_ITEM(r, i, PyLong_FromLong(b[3 + i])); /* small ints are cached: never NULL */
        }
        *pos = p + 3 + n;
        return r;
    }
    case BINARY_EXT: {
        TAKE(s, p);
        if (left < 5) {
            return truncated(s);
        }
        long long n = rd32(b + 1);
        if (n > left - 5) {
            return dec_error(p, "binary of %lld bytes runs past the end of the input", n);
        }
        r = s->mode == 0 ? PyBytes_FromStringAndSize((const char *)b + 5, n) : dec_binary_value(s, p + 5, n);
        if (r != NULL) {
            *pos = p + 5 + n;
        }
        return r;
    }
    case BIT_BINARY_EXT: {
        if (left < 6) {
            return truncated(s);
        }
        long long n = rd32(b + 1);
        int bits = b[5];
        if (n > left - 6) {
            return dec_error(p + 6, "bitstring of %lld bytes runs past the end of the input (%zd left)", n, left - 6);
        }
        if (n == 0 ? bits != 0 : bits < 1 || bits > 8) {
            return dec_fallback(s, pos, depth);
        }
        TAKE(s, p);
        if (bits == 0 || bits == 8) {
            /* A whole-byte bitstring: from a beamish peer, that is how bytes travel. */
            r = s->peer ? PyBytes_FromStringAndSize((const char *)b + 6, n) : dec_binary_value(s, p + 6, n);
        }
        else {
            PyObject *raw = PyBytes_FromStringAndSize((const char *)b + 6, n);
            r = raw == NULL ? NULL : PyObject_CallFunction(bit_binary_type, "Oi", raw, bits);
            Py_XDECREF(raw);
        }
        if (r != NULL) {
            *pos = p + 6 + n;
        }
        return r;
    }
    case NEW_PID_EXT:
        return dec_new_pid(s, pos, depth);
    case NEWER_REFERENCE_EXT:
        return dec_newer_ref(s, pos, depth);
    default:
        return dec_fallback(s, pos, depth);
    }
}

static int
check_init(void)
{
    if (!initialized) {
        PyErr_SetString(PyExc_RuntimeError, "beamish.dist._etf_c.init() was not called");
        return -1;
    }
    return 0;
}

/* The options of the last _Decoder seen, kept with a reference to it:
 * etf.decode_prefix passes the same one for every frame of a connection
 * (and a _Decoder is never changed once built), so its three attributes
 * are read once rather than per term. */
static PyObject *last_decoder;
static Py_ssize_t last_max_depth;
static int last_mode, last_peer;

/* The int attribute `name` of `o`, at least `min`; -1 with an error set if not. */
static Py_ssize_t
ssize_attr(PyObject *o, PyObject *name, Py_ssize_t min)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (n < min && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "_Decoder.%U must be at least %zd", name, min);
    }
    return PyErr_Occurred() ? -1 : n;
}

static int
read_options(Dec *s)
{
    if (s->d != last_decoder) {
        Py_ssize_t max_depth, min_objects, bytes_per_object;
        if (((max_depth = ssize_attr(s->d, s_max_depth, PY_SSIZE_T_MIN)) == -1 && PyErr_Occurred())
            || (min_objects = ssize_attr(s->d, s_min_objects, 0)) < 0
            || (bytes_per_object = ssize_attr(s->d, s_bytes_per_object, 1)) < 0) {
            return -1;
        }
        PyObject *v;
        if ((v = PyObject_GetAttr(s->d, s_binaries)) == NULL) {
            return -1;
        }
        if (!PyUnicode_Check(v)) {
            Py_DECREF(v);
            PyErr_SetString(PyExc_TypeError, "_Decoder.binaries must be a str");
            return -1;
        }
        int mode = PyUnicode_CompareWithASCIIString(v, "bytes") == 0 ? 0
                   : PyUnicode_CompareWithASCIIString(v, "str") == 0 ? 1
                                                                        : 2;
        Py_DECREF(v);
        if ((v = PyObject_GetAttr(s->d, s_peer)) == NULL) {
            return -1;
        }
        int peer = PyObject_IsTrue(v);
        Py_DECREF(v);
        if (peer < 0) {
            return -1;
        }
        Py_INCREF(s->d);
        Py_XSETREF(last_decoder, s->d);
        last_max_depth = max_depth;
        last_min_objects = min_objects;
        last_bytes_per_object = bytes_per_object;
        last_mode = mode;
        last_peer = peer;
    }
    s->max_depth = last_max_depth;
    s->mode = last_mode;
    s->peer = last_peer;
    return 0;
}

PyDoc_STRVAR(decode_doc,
"decode(d, data, pos, depth) -> (term, end)\n\n"
"Decode the term whose tag is at data[pos] with the options of the etf._Decoder d;\n"
"the same contract as etf._DECODERS[data[pos]](d, data, pos + 1, depth).");

static PyObject *
etf_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode(d, data, pos, depth) takes 4 arguments");
        return NULL;
    }
    if (check_init() < 0) {
        return NULL;
    }
    if (!PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode() needs bytes");
        return NULL;
    }
    Dec s;
    s.data = args[1];
    s.buf = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    s.len = PyBytes_GET_SIZE(args[1]);
    s.d = args[0];
    s.by_name = NULL;
    s.fork = NULL;
    s.nesting = 0;
    Py_ssize_t pos = PyLong_AsSsize_t(args[2]);
    Py_ssize_t depth = PyLong_AsSsize_t(args[3]);
    if ((pos == -1 || depth == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        return dec_error(pos, "negative offset");
    }
    if (read_options(&s) < 0) {
        return NULL;
    }
    /* etf._py_decode's budget: pos <= len, as a shorter input fails below. */
    s.budget = pos < s.len ? (s.len - pos) / last_bytes_per_object : 0;
    if (s.budget < last_min_objects) {
        s.budget = last_min_objects;
    }
    s.left = s.budget;
    PyObject *term = dec_term(&s, &pos, depth);
    Py_XDECREF(s.by_name);
    Py_XDECREF(s.fork);
    if (term == NULL) {
        return NULL;
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    if (end == NULL) {
        Py_DECREF(term);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, term, end);
    Py_DECREF(term);
    Py_DECREF(end);
    return res;
}

/* ============================================================================
 * Encoding
 * ========================================================================== */

typedef struct {
    unsigned char *buf;  /* pending bytes, not yet in `out` */
    Py_ssize_t len, cap;
    PyObject *out;       /* the bytearray, created when a fallback needs it (owned) */
    PyObject *table;     /* the Python encoder table, for the fallback (borrowed) */
    int peer;
    int nesting;         /* containers being encoded in C */
    unsigned char stack[512];
} Enc;

static int
enc_grow(Enc *e, Py_ssize_t n)
{
    if (n > PY_SSIZE_T_MAX / 2 - e->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = e->cap * 2;
    if (cap < e->len + n) {
        cap = e->len + n;
    }
    unsigned char *buf;
    if (e->buf == e->stack) {
        buf = PyMem_Malloc(cap);
        if (buf != NULL) {
            memcpy(buf, e->stack, e->len);
        }
    }
    else {
        buf = PyMem_Realloc(e->buf, cap);
    }
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->buf = buf;
    e->cap = cap;
    return 0;
}

/* Room for n more bytes, returning where they go. */
static inline unsigned char *
enc_room(Enc *e, Py_ssize_t n)
{
    if (e->cap - e->len < n && enc_grow(e, n) < 0) {
        return NULL;
    }
    unsigned char *p = e->buf + e->len;
    e->len += n;
    return p;
}

static inline void
wr16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int
enc_bytes(Enc *e, const void *src, Py_ssize_t n)
{
    unsigned char *p = enc_room(e, n);
    if (p == NULL) {
        return -1;
    }
    memcpy(p, src, n);
    return 0;
}

/* Move the pending bytes to the end of `out`. */
static int
enc_flush(Enc *e)
{
    if (e->out == NULL) {
        e->out = PyByteArray_FromStringAndSize((const char *)e->buf, e->len);
        if (e->out == NULL) {
            return -1;
        }
    }
    else if (e->len) {
        Py_ssize_t size = PyByteArray_GET_SIZE(e->out);
        if (PyByteArray_Resize(e->out, size + e->len) < 0) {
            return -1;
        }
        memcpy(PyByteArray_AS_STRING(e->out) + size, e->buf, e->len);
    }
    e->len = 0;
    return 0;
}

/* etf._enc(term, out, table): every rule of etf.py for what C does not do. */
static int
enc_fallback(Enc *e, PyObject *term)
{
    if (enc_flush(e) < 0) {
        return -1;
    }
    PyObject *args[3] = {term, e->out, e->table};
    PyObject *r = PyObject_Vectorcall(py_enc, args, 3, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int enc_term(Enc *e, PyObject *o);

static int
enc_atom(Enc *e, PyObject *atom)
{
    Py_ssize_t n;
    /* An atom lives as long as the atom table, so the UTF-8 copy that
     * PyUnicode_AsUTF8AndSize caches in it (for non-ASCII text) is paid once. */
    const char *text = PyUnicode_AsUTF8AndSize(atom, &n);
    if (text == NULL) {
        return -1;
    }
    unsigned char *p;
    if (n < 256) {
        if ((p = enc_room(e, 2 + n)) == NULL) {
            return -1;
        }
        p[0] = SMALL_ATOM_UTF8_EXT;
        p[1] = (unsigned char)n;
        memcpy(p + 2, text, n);
    }
    else {
        if (n > 0xFFFF || (p = enc_room(e, 3 + n)) == NULL) {
            return n > 0xFFFF ? enc_fallback(e, atom) : -1;
        }
        p[0] = ATOM_UTF8_EXT;
        wr16(p + 1, (uint32_t)n);
        memcpy(p + 3, text, n);
    }
    return 0;
}

static int
enc_binary_head(Enc *e, unsigned char tag, Py_ssize_t n)
{
    if ((size_t)n > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_OverflowError, "binary longer than 4 GiB");
        return -1;
    }
    unsigned char *p = enc_room(e, 5);
    if (p == NULL) {
        return -1;
    }
    p[0] = tag;
    wr32(p + 1, (uint32_t)n);
    return 0;
}

static int
enc_str(Enc *e, PyObject *o)
{
    if (PyUnicode_IS_COMPACT_ASCII(o)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        return (enc_binary_head(e, BINARY_EXT, n) < 0 || enc_bytes(e, PyUnicode_DATA(o), n) < 0) ? -1 : 0;
    }
    /* Not cached in the str (as AsUTF8AndSize would): a big text is encoded once. */
    PyObject *raw = PyUnicode_AsUTF8String(o);
    if (raw == NULL) {
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    int rc = (enc_binary_head(e, BINARY_EXT, n) < 0 || enc_bytes(e, PyBytes_AS_STRING(raw), n) < 0) ? -1 : 0;
    Py_DECREF(raw);
    return rc;
}

static int
enc_int(Enc *e, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        return enc_fallback(e, o); /* 64 bits and beyond: etf._enc_int */
    }
    unsigned char *p;
    if (0 <= v && v < 256) {
        if ((p = enc_room(e, 2)) == NULL) {
            return -1;
        }
        p[0] = SMALL_INTEGER_EXT;
        p[1] = (unsigned char)v;
    }
    else if (-0x80000000LL <= v && v <= 0x7FFFFFFFLL) {
        if ((p = enc_room(e, 5)) == NULL) {
            return -1;
        }
        p[0] = INTEGER_EXT;
        wr32(p + 1, (uint32_t)(int32_t)v);
    }
    else {
        unsigned long long mag = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        int n = 0;
        for (unsigned long long m = mag; m; m >>= 8) {
            n++;
        }
        if ((p = enc_room(e, 3 + n)) == NULL) {
            return -1;
        }
        p[0] = SMALL_BIG_EXT;
        p[1] = (unsigned char)n;
        p[2] = v < 0;
        for (int i = 0; i < n; i++, mag >>= 8) {
            p[3 + i] = (unsigned char)mag;
        }
    }
    return 0;
}

/* A PyLong that fits 32 unsigned bits, else -1 (the caller falls back). */
static inline long long
u32_of(PyObject *o)
{
    if (o == NULL || !PyLong_CheckExact(o)) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0 || v > 0xFFFFFFFFLL) {
        return -1;
    }
    return v;
}

static int
enc_pid(Enc *e, PyObject *o)
{
    PyObject *node = SLOT(o, off_pid_node);
    long long id = u32_of(SLOT(o, off_pid_id));
    long long serial = u32_of(SLOT(o, off_pid_serial));
    long long creation = u32_of(SLOT(o, off_pid_creation));
    if (node == NULL || Py_TYPE(node) != atom_type || id < 0 || serial < 0 || creation < 0) {
        return enc_fallback(e, o);
    }
    unsigned char *p = enc_room(e, 1);
    if (p == NULL) {
        return -1;
    }
    p[0] = NEW_PID_EXT;
    if (enc_atom(e, node) < 0 || (p = enc_room(e, 12)) == NULL) {
        return -1;
    }
    wr32(p, (uint32_t)id);
    wr32(p + 4, (uint32_t)serial);
    wr32(p + 8, (uint32_t)creation);
    return 0;
}

static int
enc_ref(Enc *e, PyObject *o)
{
    PyObject *node = SLOT(o, off_ref_node);
    PyObject *ids = SLOT(o, off_ref_ids);
    long long creation = u32_of(SLOT(o, off_ref_creation));
    if (node == NULL || Py_TYPE(node) != atom_type || creation < 0 || ids == NULL || !PyTuple_CheckExact(ids)
        || PyTuple_GET_SIZE(ids) < 1 || PyTuple_GET_SIZE(ids) > 5) {
        return enc_fallback(e, o);
    }
    Py_ssize_t n = PyTuple_GET_SIZE(ids);
    uint32_t id[5];
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = u32_of(PyTuple_GET_ITEM(ids, i));
        if (v < 0) {
            return enc_fallback(e, o);
        }
        id[i] = (uint32_t)v;
    }
    unsigned char *p = enc_room(e, 3);
    if (p == NULL) {
        return -1;
    }
    p[0] = NEWER_REFERENCE_EXT;
    wr16(p + 1, (uint32_t)n);
    if (enc_atom(e, node) < 0 || (p = enc_room(e, 4 + 4 * n)) == NULL) {
        return -1;
    }
    wr32(p, (uint32_t)creation);
    for (Py_ssize_t i = 0; i < n; i++) {
        wr32(p + 4 + 4 * i, id[i]);
    }
    return 0;
}

/* Encode `o`, holding a reference: Python code run by a fallback may drop
 * the container's own. */
static inline int
enc_item(Enc *e, PyObject *o)
{
    Py_INCREF(o);
    int rc = enc_term(e, o);
    Py_DECREF(o);
    return rc;
}

static int
enc_list(Enc *e, PyObject *o)
{
    Py_ssize_t n = PyList_GET_SIZE(o);
    unsigned char *p;
    if (n == 0) {
        if ((p = enc_room(e, 1)) == NULL) {
            return -1;
        }
        p[0] = NIL_EXT;
        return 0;
    }
    if (n < 65536) {
        /* What term_to_binary does with a list of bytes: STRING_EXT. */
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(o, i);
            if (!PyLong_CheckExact(x)) {
                break;
            }
            int overflow;
            long v = PyLong_AsLongAndOverflow(x, &overflow);
            if (overflow || v < 0 || v > 255) {
                break;
            }
        }
        if (i == n) {
            if ((p = enc_room(e, 3 + n)) == NULL) {
                return -1;
            }
            p[0] = STRING_EXT;
            wr16(p + 1, (uint32_t)n);
            for (i = 0; i < n; i++) {
                p[3 + i] = (unsigned char)PyLong_AsLong(PyList_GET_ITEM(o, i));
            }
            return 0;
        }
    }
    if ((size_t)n > 0xFFFFFFFFu) {
        return enc_fallback(e, o);
    }
    if ((p = enc_room(e, 5)) == NULL) {
        return -1;
    }
    p[0] = LIST_EXT;
    wr32(p + 1, (uint32_t)n);
    /* The size is read again each turn: a fallback may have run Python code. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
        if (enc_item(e, PyList_GET_ITEM(o, i)) < 0) {
            return -1;
        }
    }
    if ((p = enc_room(e, 1)) == NULL) {
        return -1;
    }
    p[0] = NIL_EXT;
    return 0;
}

static int
enc_tuple(Enc *e, PyObject *o)
{
    Py_ssize_t n = PyTuple_GET_SIZE(o);
    unsigned char *p;
    if (n < 256) {
        if ((p = enc_room(e, 2)) == NULL) {
            return -1;
        }
        p[0] = SMALL_TUPLE_EXT;
        p[1] = (unsigned char)n;
    }
    else {
        if ((size_t)n > 0xFFFFFFFFu) {
            return enc_fallback(e, o);
        }
        if ((p = enc_room(e, 5)) == NULL) {
            return -1;
        }
        p[0] = LARGE_TUPLE_EXT;
        wr32(p + 1, (uint32_t)n);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (enc_term(e, PyTuple_GET_ITEM(o, i)) < 0) { /* a tuple cannot change */
            return -1;
        }
    }
    return 0;
}

static int
enc_map(Enc *e, PyObject *o)
{
    Py_ssize_t n = PyDict_GET_SIZE(o);
    if ((size_t)n > 0xFFFFFFFFu) {
        return enc_fallback(e, o);
    }
    unsigned char *p = enc_room(e, 5);
    if (p == NULL) {
        return -1;
    }
    p[0] = MAP_EXT;
    wr32(p + 1, (uint32_t)n);
    Py_ssize_t i = 0;
    PyObject *key, *value;
    while (PyDict_Next(o, &i, &key, &value)) {
        Py_INCREF(value);
        int rc = enc_item(e, key);
        if (rc == 0) {
            rc = enc_term(e, value);
        }
        Py_DECREF(value);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static int
enc_improper(Enc *e, PyObject *o)
{
    PyObject *items = SLOT(o, off_il_items);
    PyObject *tail = SLOT(o, off_il_tail);
    /* Anything but a non-empty list and a tail that is no list: etf.py says why. */
    if (items == NULL || tail == NULL || !PyList_CheckExact(items) || PyList_GET_SIZE(items) == 0
        || PyList_Check(tail) || PyObject_TypeCheck(tail, frozen_list_type)
        || (size_t)PyList_GET_SIZE(items) > 0xFFFFFFFFu) {
        return enc_fallback(e, o);
    }
    unsigned char *p = enc_room(e, 5);
    if (p == NULL) {
        return -1;
    }
    p[0] = LIST_EXT;
    wr32(p + 1, (uint32_t)PyList_GET_SIZE(items));
    Py_INCREF(items);
    Py_INCREF(tail);
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        rc = enc_item(e, PyList_GET_ITEM(items, i));
    }
    if (rc == 0) {
        rc = enc_term(e, tail);
    }
    Py_DECREF(items);
    Py_DECREF(tail);
    return rc;
}

/* Dispatch on the EXACT type: a subclass of any of these (IntEnum, an Atom
 * subclass, OrderedDict...) goes to etf.py, which knows how each is meant to
 * travel; except a tuple subclass its table has no entry for (see the end). */
static int
enc_term(Enc *e, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    unsigned char *p;
    int rc;
    if (t == atom_type) {
        return enc_atom(e, o);
    }
    if (t == &PyTuple_Type || t == &PyList_Type || t == &PyDict_Type || t == improper_type) {
        if (e->nesting >= C_DEPTH_MAX) {
            return enc_fallback(e, o);
        }
        if (Py_EnterRecursiveCall(" while encoding an Erlang term")) {
            return -1;
        }
        e->nesting++;
        rc = t == &PyTuple_Type  ? enc_tuple(e, o)
             : t == &PyList_Type ? enc_list(e, o)
             : t == &PyDict_Type ? enc_map(e, o)
                                 : enc_improper(e, o);
        e->nesting--;
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (t == &PyLong_Type) {
        return enc_int(e, o);
    }
    if (t == &PyBool_Type || o == Py_None) {
        const char *text = o == Py_True ? "true" : o == Py_False ? "false" : "nil";
        Py_ssize_t n = (Py_ssize_t)strlen(text);
        if ((p = enc_room(e, 2 + n)) == NULL) {
            return -1;
        }
        p[0] = SMALL_ATOM_UTF8_EXT;
        p[1] = (unsigned char)n;
        memcpy(p + 2, text, n);
        return 0;
    }
    if (t == &PyUnicode_Type) {
        return enc_str(e, o);
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        if (e->peer) {
            /* A BIT_BINARY whose last byte is whole: bytes, for a beamish peer. */
            if (enc_binary_head(e, BIT_BINARY_EXT, n) < 0 || (p = enc_room(e, 1)) == NULL) {
                return -1;
            }
            p[0] = n ? 8 : 0;
        }
        else if (enc_binary_head(e, BINARY_EXT, n) < 0) {
            return -1;
        }
        return enc_bytes(e, PyBytes_AS_STRING(o), n);
    }
    if (t == &PyFloat_Type) {
        double v = PyFloat_AS_DOUBLE(o);
        if (!isfinite(v)) {
            return enc_fallback(e, o); /* etf.py's EncodeError */
        }
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        if ((p = enc_room(e, 9)) == NULL) {
            return -1;
        }
        p[0] = NEW_FLOAT_EXT;
        wr32(p + 1, (uint32_t)(bits >> 32));
        wr32(p + 5, (uint32_t)bits);
        return 0;
    }
    if (t == pid_type) {
        return enc_pid(e, o);
    }
    if (t == ref_type) {
        return enc_ref(e, o);
    }
    if (PyTuple_Check(o) && e->table != NULL) {
        /* A tuple subclass etf.py's table does not name (a NamedTuple such as
         * a call's From) is a plain tuple there too (its _resolve); the named
         * ones (FrozenList, a registered struct) keep their own encoder. */
        PyObject *own = PyDict_GetItemWithError(e->table, (PyObject *)t);
        if (own == NULL && !PyErr_Occurred()) {
            if (e->nesting >= C_DEPTH_MAX) {
                return enc_fallback(e, o);
            }
            if (Py_EnterRecursiveCall(" while encoding an Erlang term")) {
                return -1;
            }
            e->nesting++;
            rc = enc_tuple(e, o);
            e->nesting--;
            Py_LeaveRecursiveCall();
            return rc;
        }
        if (own == NULL) {
            return -1;
        }
    }
    return enc_fallback(e, o);
}

static void
enc_init(Enc *e, PyObject *out, PyObject *table, int peer)
{
    e->buf = e->stack;
    e->len = 0;
    e->cap = sizeof e->stack;
    e->out = out;
    e->table = table;
    e->peer = peer;
    e->nesting = 0;
}

static void
enc_release(Enc *e)
{
    if (e->buf != e->stack) {
        PyMem_Free(e->buf);
    }
    Py_XDECREF(e->out);
}

PyDoc_STRVAR(encode_doc,
"encode(term, table, beamish_peer) -> bytes\n\n"
"The version byte 131 and term's encoding; `table` is the etf encoder table\n"
"that values C does not handle are encoded with.");

static PyObject *
etf_encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode(term, table, beamish_peer) takes 3 arguments");
        return NULL;
    }
    if (check_init() < 0) {
        return NULL;
    }
    int peer = PyObject_IsTrue(args[2]);
    if (peer < 0) {
        return NULL;
    }
    Enc e;
    enc_init(&e, NULL, args[1], peer);
    e.buf[e.len++] = 131;
    PyObject *res = NULL;
    if (enc_term(&e, args[0]) == 0) {
        if (e.out == NULL) {
            res = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
        }
        else if (enc_flush(&e) == 0) {
            res = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(e.out), PyByteArray_GET_SIZE(e.out));
        }
    }
    enc_release(&e);
    return res;
}

PyDoc_STRVAR(encode_into_doc,
"encode_into(out, term, table, beamish_peer) -> None\n\n"
"Append term's encoding (no version byte) to the bytearray out.");

static PyObject *
etf_encode_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode_into(out, term, table, beamish_peer) takes 4 arguments");
        return NULL;
    }
    if (check_init() < 0) {
        return NULL;
    }
    if (!PyByteArray_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encode_into() needs a bytearray");
        return NULL;
    }
    int peer = PyObject_IsTrue(args[3]);
    if (peer < 0) {
        return NULL;
    }
    Enc e;
    enc_init(&e, Py_NewRef(args[0]), args[2], peer);
    int rc = enc_term(&e, args[1]);
    if (rc == 0) {
        rc = enc_flush(&e);
    }
    else {
        /* As etf.py: out keeps what was encoded before the error. */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        if (enc_flush(&e) < 0) {
            PyErr_Clear();
        }
        PyErr_SetRaisedException(exc);
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (enc_flush(&e) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
#endif
    }
    enc_release(&e);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ============================================================================
 * Module
 * ========================================================================== */

/* The byte offset of slot `name` of `cls`, checking it is a plain object slot. */
static int
slot_offset(PyTypeObject *cls, const char *name, Py_ssize_t *off)
{
    PyObject *desc = PyDict_GetItemString(cls->tp_dict, name);
    if (desc == NULL || !Py_IS_TYPE(desc, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)desc)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", cls->tp_name, name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)desc)->d_member->offset;
    return 0;
}

static int
take_type(PyObject *o, PyTypeObject **slot)
{
    if (!PyType_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "init() expects classes");
        return -1;
    }
    Py_XSETREF(*slot, (PyTypeObject *)Py_NewRef(o));
    return 0;
}

PyDoc_STRVAR(init_doc,
"init(Atom, Pid, Ref, ImproperList, FrozenList, BitBinary, DecodeError, enc, decoders,\n"
"     new_atom, utf8_atoms, latin1_atoms) -> None\n\n"
"Hand over the classes, functions and shared caches of etf.py (called once by it).");

static PyObject *
etf_init(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "init() takes 12 arguments");
        return NULL;
    }
    if (take_type(args[0], &atom_type) < 0 || take_type(args[1], &pid_type) < 0
        || take_type(args[2], &ref_type) < 0 || take_type(args[3], &improper_type) < 0
        || take_type(args[4], &frozen_list_type) < 0) {
        return NULL;
    }
    if (slot_offset(pid_type, "node", &off_pid_node) < 0 || slot_offset(pid_type, "id", &off_pid_id) < 0
        || slot_offset(pid_type, "serial", &off_pid_serial) < 0
        || slot_offset(pid_type, "creation", &off_pid_creation) < 0
        || slot_offset(pid_type, "_hash", &off_pid_hash) < 0 || slot_offset(ref_type, "node", &off_ref_node) < 0
        || slot_offset(ref_type, "creation", &off_ref_creation) < 0
        || slot_offset(ref_type, "ids", &off_ref_ids) < 0 || slot_offset(ref_type, "_hash", &off_ref_hash) < 0
        || slot_offset(improper_type, "items", &off_il_items) < 0
        || slot_offset(improper_type, "tail", &off_il_tail) < 0) {
        return NULL;
    }
    if (!PyList_Check(args[8]) || PyList_GET_SIZE(args[8]) != 256 || !PyDict_Check(args[10])
        || !PyDict_Check(args[11])) {
        PyErr_SetString(PyExc_TypeError, "init(): decoders must be a list of 256, the atom caches dicts");
        return NULL;
    }
    PyObject *decoders = PyList_AsTuple(args[8]);
    PyObject *key = PyObject_CallOneArg(args[0], s_struct_key_text);
    if (decoders == NULL || key == NULL) {
        Py_XDECREF(decoders);
        Py_XDECREF(key);
        return NULL;
    }
    Py_XSETREF(py_decoders, decoders);
    Py_XSETREF(struct_key, key);
    Py_XSETREF(bit_binary_type, Py_NewRef(args[5]));
    Py_XSETREF(decode_error, Py_NewRef(args[6]));
    Py_XSETREF(py_enc, Py_NewRef(args[7]));
    Py_XSETREF(py_new_atom, Py_NewRef(args[9]));
    Py_XSETREF(utf8_atoms, Py_NewRef(args[10]));
    Py_XSETREF(latin1_atoms, Py_NewRef(args[11]));
    /* A new init may bring a new Atom class: drop what was decoded before. */
    cache_clear(utf8_cache, ATOM_CACHE_SIZE);
    cache_clear(latin1_cache, ATOM_CACHE_SIZE);
    cache_clear(pid_cache, PID_CACHE_SIZE);
    Py_CLEAR(last_decoder);
    initialized = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)(void (*)(void))etf_init, METH_FASTCALL, init_doc},
    {"encode", (PyCFunction)(void (*)(void))etf_encode, METH_FASTCALL, encode_doc},
    {"encode_into", (PyCFunction)(void (*)(void))etf_encode_into, METH_FASTCALL, encode_into_doc},
    {"decode", (PyCFunction)(void (*)(void))etf_decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "beamish.dist._etf_c",
    "C accelerator for beamish.dist.etf (see etf.py's \"Speed\" section).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__etf_c(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_utf8, "utf-8");
    INTERN(s_latin1, "latin-1");
    INTERN(s_max_depth, "max_depth");
    INTERN(s_binaries, "binaries");
    INTERN(s_peer, "peer");
    INTERN(s_structs, "structs");
    INTERN(s_by_name, "by_name");
    INTERN(s_left, "left");
    INTERN(s_min_objects, "min_objects");
    INTERN(s_bytes_per_object, "bytes_per_object");
    INTERN(s_struct_key_text, "__struct__");
#undef INTERN
    return PyModule_Create(&module_def);
}
