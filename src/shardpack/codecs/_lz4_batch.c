/* LZ4 blocks decompressed on a thread of their own, which never takes the GIL.
 *
 * start(stored, raw_sizes, out=None) -> Pending: starts a native thread that decompresses
 *     every block, and returns at once. Each block gets bytes of its raw size, or, with `out` (a
 *     writable buffer of at least their sum), the next raw_sizes[j] bytes of out, in order: a
 *     scan reuses two such buffers instead of faulting in fresh memory for every batch.
 * read(fd, offset, stored_buf, starts, stored_sizes, raw_sizes, checksums, out) -> Pending:
 *     the same for blocks of a local file that lie together: the thread also reads them (one
 *     pread of len(stored_buf) bytes at offset into stored_buf; block j at starts[j] there) and
 *     checks each block's xxh3 against checksums[j] (None: no check) before decompressing it,
 *     so the scanning thread does neither. The fd is duplicated: closing the file meanwhile
 *     does not touch the read.
 * Pending.result() -> list[bytes] (or None with `out`): waits for that thread (without the GIL);
 *     ValueError("block J: ...") for the first block that does not decompress to its size, or
 *     (read) cannot be read or fails its checksum (J counts from 0 in the batch).
 *
 * A full scan starts the next batch, then turns this one into records (packfile/scan.py). A
 * Python worker thread would need the GIL to start each batch, and gets it only when the
 * scanning thread lets go; this thread needs nothing from Python, so the handover is a thread
 * start. Buffers are held (buffer protocol) and outputs owned by the Pending until the thread
 * is joined, also when it is dropped unread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "vendor/lz4/lz4.h"
#define XXH_INLINE_ALL
#include "vendor/xxhash/xxhash.h"

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Py_buffer *inputs;     /* start(): count views, held until dealloc */
    Py_ssize_t held;       /* how many of them */
    PyObject **outputs;    /* count bytes objects, filled by the thread (NULLs with `out`) */
    char **targets;        /* where each block goes */
    Py_ssize_t *sizes;     /* raw sizes */
    Py_buffer out;         /* the caller's buffer, when given */
    int has_out;
    /* read(): the thread reads the stored blocks itself */
    int fd;                /* a duplicate, closed by the thread; -1: start() */
    off_t offset;
    Py_buffer stored;      /* where they go (held when stored.obj) */
    Py_ssize_t *starts;
    Py_ssize_t *stored_sizes;
    uint64_t *checksums;   /* NULL: not checked */
    /* the outcome */
    Py_ssize_t failed;     /* the first block that failed, or -1 */
    int result;            /* LZ4's answer for it (or -1) */
    const char *failure;   /* what went wrong there */
    pthread_t thread;
    int running;           /* a thread was started and not yet joined */
    pid_t owner;           /* the process that started it: a forked child has no such thread */
} Pending;

static void fail(Pending *p, Py_ssize_t j, int result, const char *failure) {
    p->failed = j;
    p->result = result;
    p->failure = failure;
}

/* read(): the batch's stored bytes, in one pread (retried on EINTR and short reads) */
static int read_stored(Pending *p) {
    Py_ssize_t done = 0;
    while (done < p->stored.len) {
        ssize_t got = pread(p->fd, (char *)p->stored.buf + done, p->stored.len - done,
                            p->offset + done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        done += got;
    }
    return 0;
}

static void decompress_all(Pending *p) {
    if (p->fd >= 0 && read_stored(p) < 0) {
        fail(p, 0, -1, "cannot be read");
        return;
    }
    for (Py_ssize_t j = 0; j < p->count; j++) {
        const char *in;
        Py_ssize_t length;
        if (p->fd >= 0) {
            in = (const char *)p->stored.buf + p->starts[j];
            length = p->stored_sizes[j];
            if (p->checksums != NULL && XXH3_64bits(in, length) != p->checksums[j]) {
                fail(p, j, -1, "checksum mismatch");
                return;
            }
        } else {
            in = (const char *)p->inputs[j].buf;
            length = p->inputs[j].len;
        }
        if (length > INT_MAX || p->sizes[j] > INT_MAX) {
            fail(p, j, -1, "lz4 decompression failed");
            return;
        }
        int got = LZ4_decompress_safe(in, p->targets[j], (int)length, (int)p->sizes[j]);
        if (got != p->sizes[j]) {
            fail(p, j, got, "lz4 decompression failed");
            return;
        }
    }
}

static void *run(void *arg) {
    Pending *p = (Pending *)arg;
    decompress_all(p);
    int fd = p->fd;
    if (fd >= 0) {
        p->fd = -1; /* first: a child forked now closes its own copy (dealloc), never a reuse */
        close(fd);
    }
    return NULL;
}

static void join(Pending *p) {
    if (p->running && getpid() != p->owner) {
        p->running = 0; /* forked while it ran: the copy of its outputs may be half written */
        fail(p, 0, -1, "started before a fork");
    }
    if (p->running) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(p->thread, NULL);
        Py_END_ALLOW_THREADS
        p->running = 0;
    }
}

static void pending_dealloc(Pending *p) {
    join(p);
    if (p->fd >= 0) close(p->fd); /* no thread was started */
    for (Py_ssize_t j = 0; j < p->held; j++) PyBuffer_Release(&p->inputs[j]);
    if (p->outputs != NULL)
        for (Py_ssize_t j = 0; j < p->count; j++) Py_XDECREF(p->outputs[j]);
    if (p->has_out) PyBuffer_Release(&p->out);
    if (p->stored.obj != NULL) PyBuffer_Release(&p->stored);
    PyMem_Free(p->inputs);
    PyMem_Free(p->outputs);
    PyMem_Free(p->targets);
    PyMem_Free(p->sizes);
    PyMem_Free(p->starts);
    PyMem_Free(p->stored_sizes);
    PyMem_Free(p->checksums);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *pending_result(Pending *p, PyObject *unused) {
    join(p);
    if (p->outputs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "result() was taken already");
        return NULL;
    }
    if (p->failed >= 0) {
        PyErr_Format(PyExc_ValueError, "block %zd: %s (%d of %zd bytes)", p->failed, p->failure,
                     p->result, p->sizes[p->failed]);
        return NULL;
    }
    if (p->has_out) {
        PyMem_Free(p->outputs);
        p->outputs = NULL;
        Py_RETURN_NONE;
    }
    PyObject *list = PyList_New(p->count);
    if (list == NULL) return NULL;
    for (Py_ssize_t j = 0; j < p->count; j++) {
        PyList_SET_ITEM(list, j, p->outputs[j]); /* the list takes the reference */
        p->outputs[j] = NULL;
    }
    PyMem_Free(p->outputs);
    p->outputs = NULL;
    return list;
}

static PyMethodDef pending_methods[] = {
    {"result", (PyCFunction)pending_result, METH_NOARGS, "The raw blocks (waits for the thread)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shardpack.codecs._lz4_batch.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LZ4 blocks being decompressed on a native thread.",
    .tp_methods = pending_methods,
};

static Pending *pending_new(Py_ssize_t count) {
    Pending *p = PyObject_New(Pending, &PendingType);
    if (p == NULL) return NULL;
    p->count = count;
    p->held = 0;
    p->has_out = 0;
    p->fd = -1;
    p->offset = 0;
    p->stored.obj = NULL;
    p->starts = NULL;
    p->stored_sizes = NULL;
    p->checksums = NULL;
    p->failed = -1;
    p->result = 0;
    p->failure = NULL;
    p->running = 0;
    Py_ssize_t n = count ? count : 1;
    p->inputs = PyMem_Calloc(n, sizeof(Py_buffer));
    p->outputs = PyMem_Calloc(n, sizeof(PyObject *));
    p->targets = PyMem_Calloc(n, sizeof(char *));
    p->sizes = PyMem_Calloc(n, sizeof(Py_ssize_t));
    if (p->inputs == NULL || p->outputs == NULL || p->targets == NULL || p->sizes == NULL) {
        Py_DECREF(p);
        PyErr_NoMemory();
        return NULL;
    }
    return p;
}

/* The raw sizes, bounded by what LZ4 can expand the stored sizes to (~255x), and where each
 * block goes: `out` back to back when given, else bytes of its own. */
static int place_outputs(Pending *p, PyObject *raw_sizes, const Py_ssize_t *stored_lengths,
                         PyObject *out) {
    if (out != Py_None) {
        if (PyObject_GetBuffer(out, &p->out, PyBUF_WRITABLE) < 0) return -1;
        p->has_out = 1;
    }
    Py_ssize_t placed = 0; /* bytes of `out` given to blocks so far */
    for (Py_ssize_t j = 0; j < p->count; j++) {
        Py_ssize_t size = PyLong_AsSsize_t(PyList_GET_ITEM(raw_sizes, j));
        if (size == -1 && PyErr_Occurred()) return -1;
        if (size < 0 || size > 255 * stored_lengths[j] + 64) {
            PyErr_Format(PyExc_ValueError,
                         "block %zd: lz4 block of %zd bytes cannot hold %zd raw bytes", j,
                         stored_lengths[j], size);
            return -1;
        }
        p->sizes[j] = size;
        if (p->has_out) {
            if (size > p->out.len - placed) {
                PyErr_SetString(PyExc_ValueError, "the output buffer is smaller than the blocks");
                return -1;
            }
            p->targets[j] = (char *)p->out.buf + placed;
            placed += size;
            continue;
        }
        p->outputs[j] = PyBytes_FromStringAndSize(NULL, size);
        if (p->outputs[j] == NULL) return -1;
        p->targets[j] = PyBytes_AS_STRING(p->outputs[j]);
    }
    return 0;
}

static PyObject *launch(Pending *p) {
    p->owner = getpid();
    if (pthread_create(&p->thread, NULL, run, p) == 0) {
        p->running = 1;
    } else { /* no thread to be had: the work here, still without the GIL */
        Py_BEGIN_ALLOW_THREADS
        run(p);
        Py_END_ALLOW_THREADS
    }
    return (PyObject *)p;
}

static PyObject *start(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "start(stored: list, raw_sizes: list, out=None), lists of one length");
        return NULL;
    }
    Pending *p = pending_new(PyList_GET_SIZE(args[0]));
    if (p == NULL) return NULL;
    Py_ssize_t *lengths = PyMem_Calloc(p->count ? p->count : 1, sizeof(Py_ssize_t));
    if (lengths == NULL) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t j = 0; j < p->count; j++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(args[0], j), &p->inputs[j], PyBUF_SIMPLE) < 0)
            goto fail;
        p->held = j + 1;
        lengths[j] = p->inputs[j].len;
    }
    if (place_outputs(p, args[1], lengths, nargs == 3 ? args[2] : Py_None) < 0) goto fail;
    PyMem_Free(lengths);
    return launch(p);
fail:
    PyMem_Free(lengths);
    Py_DECREF(p);
    return NULL;
}

static int ssize_list(PyObject *list, Py_ssize_t count, Py_ssize_t **into) {
    *into = PyMem_Calloc(count ? count : 1, sizeof(Py_ssize_t));
    if (*into == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        (*into)[j] = PyLong_AsSsize_t(PyList_GET_ITEM(list, j));
        if ((*into)[j] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static PyObject *read_blocks(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyList_Check(args[3]) || !PyList_Check(args[4]) ||
        !PyList_Check(args[5]) || (args[6] != Py_None && !PyList_Check(args[6]))) {
        PyErr_SetString(PyExc_TypeError, "read(fd, offset, stored_buf, starts: list, "
                                         "stored_sizes: list, raw_sizes: list, checksums, out)");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(args[3]);
    if (PyList_GET_SIZE(args[4]) != count || PyList_GET_SIZE(args[5]) != count ||
        (args[6] != Py_None && PyList_GET_SIZE(args[6]) != count)) {
        PyErr_SetString(PyExc_TypeError, "read(): the lists must be of one length");
        return NULL;
    }
    int fd = PyLong_AsLong(args[0]);
    long long offset = PyLong_AsLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "read(): a negative offset");
        return NULL;
    }
    Pending *p = pending_new(count);
    if (p == NULL) return NULL;
    p->offset = (off_t)offset;
    if (PyObject_GetBuffer(args[2], &p->stored, PyBUF_WRITABLE) < 0) {
        p->stored.obj = NULL;
        goto fail;
    }
    if (ssize_list(args[3], count, &p->starts) < 0) goto fail;
    if (ssize_list(args[4], count, &p->stored_sizes) < 0) goto fail;
    for (Py_ssize_t j = 0; j < count; j++) { /* every block inside the stored buffer */
        if (p->starts[j] < 0 || p->stored_sizes[j] < 0 ||
            p->stored_sizes[j] > p->stored.len - p->starts[j]) {
            PyErr_Format(PyExc_ValueError, "block %zd lies outside the stored buffer", j);
            goto fail;
        }
    }
    if (args[6] != Py_None) {
        p->checksums = PyMem_Calloc(count ? count : 1, sizeof(uint64_t));
        if (p->checksums == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t j = 0; j < count; j++) {
            p->checksums[j] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(args[6], j));
            if (PyErr_Occurred()) goto fail;
        }
    }
    if (place_outputs(p, args[5], p->stored_sizes, args[7]) < 0) goto fail;
    p->fd = dup(fd);
    if (p->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    return launch(p);
fail:
    Py_DECREF(p);
    return NULL;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(stored, raw_sizes, out=None): decompress LZ4 blocks on a native thread"},
    {"read", (PyCFunction)(void (*)(void))read_blocks, METH_FASTCALL,
     "read(fd, offset, stored_buf, starts, stored_sizes, raw_sizes, checksums, out): read, "
     "check and decompress LZ4 blocks of a local file on a native thread"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_lz4_batch", "LZ4 blocks decompressed off the GIL (optional)", -1,
    methods,
};

PyMODINIT_FUNC PyInit__lz4_batch(void) {
    if (PyType_Ready(&PendingType) < 0) return NULL;
    return PyModule_Create(&module_def);
}
