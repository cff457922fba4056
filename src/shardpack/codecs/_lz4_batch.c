/* LZ4 blocks decompressed on a thread of their own, which never takes the GIL.
 *
 * start(stored, raw_sizes, out=None) -> Pending: starts a native thread that decompresses
 *     every block, and returns at once. Each block gets bytes of its raw size, or, with `out` (a
 *     writable buffer of at least their sum), the next raw_sizes[j] bytes of out, in order: a
 *     scan reuses two such buffers instead of faulting in fresh memory for every batch.
 * Pending.result() -> list[bytes] (or None with `out`): waits for that thread (without the GIL);
 *     ValueError("block J: ...") for the first block that does not decompress to its size (J
 *     counts from 0 in the batch).
 *
 * A full scan starts the next batch, then turns this one into records (packfile/scan.py). A
 * Python worker thread would need the GIL to start each batch, and gets it only when the
 * scanning thread lets go; this thread needs nothing from Python, so the handover is a thread
 * start. Inputs are held (buffer protocol) and outputs owned by the Pending until the thread is
 * joined, also when it is dropped unread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <unistd.h>

#include "vendor/lz4/lz4.h"

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Py_buffer *inputs;    /* count views, held until dealloc */
    PyObject **outputs;   /* count bytes objects, filled by the thread (NULLs with `out`) */
    char **targets;       /* where each block goes */
    Py_buffer out;        /* the caller's buffer, when given */
    int has_out;
    Py_ssize_t *sizes;    /* raw sizes */
    Py_ssize_t failed;    /* first block that did not decompress, or -1 */
    int result;           /* LZ4's answer for that block */
    int held;             /* inputs acquired */
    pthread_t thread;
    int running;          /* a thread was started and not yet joined */
    pid_t owner;          /* the process that started it: a forked child has no such thread */
} Pending;

static void decompress_all(Pending *p) {
    for (Py_ssize_t j = 0; j < p->count; j++) {
        Py_buffer *in = &p->inputs[j];
        if (in->len > INT_MAX || p->sizes[j] > INT_MAX) {
            p->failed = j;
            p->result = -1;
            return;
        }
        int got = LZ4_decompress_safe((const char *)in->buf, p->targets[j], (int)in->len,
                                      (int)p->sizes[j]);
        if (got != p->sizes[j]) {
            p->failed = j;
            p->result = got;
            return;
        }
    }
}

static void *run(void *arg) {
    decompress_all((Pending *)arg);
    return NULL;
}

static void join(Pending *p) {
    if (p->running && getpid() != p->owner) {
        p->running = 0; /* forked while it ran: the copy of its outputs may be half written */
        p->failed = 0;
        p->result = -1;
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
    for (Py_ssize_t j = 0; j < p->held; j++) PyBuffer_Release(&p->inputs[j]);
    if (p->outputs != NULL)
        for (Py_ssize_t j = 0; j < p->count; j++) Py_XDECREF(p->outputs[j]);
    if (p->has_out) PyBuffer_Release(&p->out);
    PyMem_Free(p->inputs);
    PyMem_Free(p->outputs);
    PyMem_Free(p->targets);
    PyMem_Free(p->sizes);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *pending_result(Pending *p, PyObject *unused) {
    join(p);
    if (p->outputs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "result() was taken already");
        return NULL;
    }
    if (p->failed >= 0) {
        PyErr_Format(PyExc_ValueError, "block %zd: lz4 decompression failed (%d of %zd bytes)",
                     p->failed, p->result, p->sizes[p->failed]);
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

static PyObject *start(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "start(stored: list, raw_sizes: list, out=None), lists of one length");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(args[0]);
    Pending *p = PyObject_New(Pending, &PendingType);
    if (p == NULL) return NULL;
    p->count = count;
    p->failed = -1;
    p->result = 0;
    p->held = 0;
    p->running = 0;
    p->has_out = 0;
    p->inputs = PyMem_Calloc(count ? count : 1, sizeof(Py_buffer));
    p->outputs = PyMem_Calloc(count ? count : 1, sizeof(PyObject *));
    p->targets = PyMem_Calloc(count ? count : 1, sizeof(char *));
    p->sizes = PyMem_Calloc(count ? count : 1, sizeof(Py_ssize_t));
    if (p->inputs == NULL || p->outputs == NULL || p->targets == NULL || p->sizes == NULL) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    if (nargs == 3 && args[2] != Py_None) {
        if (PyObject_GetBuffer(args[2], &p->out, PyBUF_WRITABLE) < 0) {
            Py_DECREF(p);
            return NULL;
        }
        p->has_out = 1;
    }
    Py_ssize_t placed = 0; /* bytes of `out` given to blocks so far */
    for (Py_ssize_t j = 0; j < count; j++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(args[0], j), &p->inputs[j], PyBUF_SIMPLE) < 0) {
            Py_DECREF(p);
            return NULL;
        }
        p->held = j + 1;
        Py_ssize_t size = PyLong_AsSsize_t(PyList_GET_ITEM(args[1], j));
        if (size == -1 && PyErr_Occurred()) {
            Py_DECREF(p);
            return NULL;
        }
        /* LZ4 expands at most ~255x: refuse a size it could never produce before allocating */
        if (size < 0 || size > 255 * p->inputs[j].len + 64) {
            PyErr_Format(PyExc_ValueError, "block %zd: lz4 block of %zd bytes cannot hold %zd "
                         "raw bytes", j, p->inputs[j].len, size);
            Py_DECREF(p);
            return NULL;
        }
        p->sizes[j] = size;
        if (p->has_out) {
            if (size > p->out.len - placed) {
                PyErr_SetString(PyExc_ValueError, "the output buffer is smaller than the blocks");
                Py_DECREF(p);
                return NULL;
            }
            p->targets[j] = (char *)p->out.buf + placed;
            placed += size;
            continue;
        }
        p->outputs[j] = PyBytes_FromStringAndSize(NULL, size);
        if (p->outputs[j] == NULL) {
            Py_DECREF(p);
            return NULL;
        }
        p->targets[j] = PyBytes_AS_STRING(p->outputs[j]);
    }
    p->owner = getpid();
    if (pthread_create(&p->thread, NULL, run, p) == 0) {
        p->running = 1;
    } else { /* no thread to be had: decompress here, still without the GIL */
        Py_BEGIN_ALLOW_THREADS
        decompress_all(p);
        Py_END_ALLOW_THREADS
    }
    return (PyObject *)p;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(stored, raw_sizes): decompress LZ4 blocks on a native thread; .result() waits"},
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
