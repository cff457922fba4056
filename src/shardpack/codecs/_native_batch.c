/* LZ4 and zstd blocks decompressed on threads of their own, which never take the GIL.
 *
 * start(codec, stored, raw_sizes, out, threads, dictionary) -> Pending: hands the batch to
 *     native threads (a pool kept between batches) that decompress every block, and returns at
 *     once. codec: LZ4 or ZSTD (module constants);
 *     dictionary: a zstd dictionary's bytes, or None. Each block gets bytes of its raw size,
 *     or, with `out` (a writable buffer of at least their sum; None: none), the next
 *     raw_sizes[j] bytes of out, in order: a scan reuses two such buffers instead of faulting
 *     in fresh memory for every batch.
 * read(codec, fd, offset, stored_buf, starts, stored_sizes, raw_sizes, checksums, out,
 *      threads, dictionary) -> Pending:
 *     the same for blocks of a local file that lie together: the threads also read them (block
 *     j from offset + starts[j] into stored_buf at starts[j], one pread each) and check its xxh3
 *     against checksums[j] (None: no check) before decompressing it, so the scanning thread
 *     does neither. The fd is duplicated: closing the file meanwhile does not touch the read.
 * Pending.result() -> list[bytes] (or None with `out`): waits for the threads (without the
 *     GIL), decompressing blocks none of them has taken yet meanwhile; ValueError("block J:
 *     ...") for the first block that does not decompress to its size, or (read) cannot be read
 *     or fails its checksum (J counts from 0 in the batch). A Pending dropped unread stops its
 *     threads after the blocks they hold.
 * Pending.wait_block(j) -> None (with `out`) or block j's bytes: waits until block j is
 *     decompressed, taking blocks no thread has taken yet meanwhile; the same ValueError
 *     where a block up to j failed. A scan turns each block into records as soon as it is
 *     there, rather than waiting for the whole batch: the batch's last blocks then overlap its
 *     first records. result() after it still waits for the threads to leave.
 * Pending.stop(): no thread takes another block, and it returns once none works on the batch
 *     (a scan left early); the blocks not taken are left as they were.
 *
 * The batch's blocks are shared among `threads` threads (and result()'s caller), each taking
 * the next block not yet taken. zstd takes longer to decompress a block than a scan takes to
 * build its records, so where cores are free it asks for several threads; lz4, one.
 *
 * A full scan starts the next batch, then turns this one into records (packfile/scan.py). A
 * Python worker thread would need the GIL to start each batch, and gets it only when the
 * scanning thread lets go; these threads need nothing from Python, so the handover is a
 * wake-up. Buffers are held (buffer protocol) and outputs owned by the Pending until no thread
 * works on it, also when it is dropped unread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "vendor/lz4/lz4.h"
#include "vendor/zstd/zstd.h"
#define XXH_INLINE_ALL
#include "vendor/xxhash/xxhash.h"

enum { CODEC_LZ4 = 0, CODEC_ZSTD = 1 };
#define MAX_THREADS 16

typedef struct Pending_ {
    PyObject_HEAD
    int codec;
    int threads;           /* how many decompress the batch */
    Py_buffer dict;        /* a zstd dictionary (held when dict.obj) */
    ZSTD_DDict *ddict;     /* made from it before the threads start, shared by them */
    Py_ssize_t next;       /* the next block no thread has taken (atomic) */
    Py_ssize_t count;
    Py_buffer *inputs;     /* start(): count views, held until dealloc */
    Py_ssize_t held;       /* how many of them */
    PyObject **outputs;    /* count bytes objects, filled by the threads (NULLs with `out`) */
    char **targets;        /* where each block goes */
    Py_ssize_t *sizes;     /* raw sizes */
    Py_buffer out;         /* the caller's buffer, when given */
    int has_out;
    /* read(): the threads read the stored blocks themselves */
    int fd;                /* a duplicate, closed once the threads are joined; -1: start() */
    off_t offset;
    Py_buffer stored;      /* where they go (held when stored.obj) */
    Py_ssize_t *starts;
    Py_ssize_t *stored_sizes;
    uint64_t *checksums;   /* NULL: not checked */
    /* the outcome: block j's, written only by the thread that took it */
    Py_ssize_t failed;     /* the lowest block that failed, or -1 (atomic) */
    unsigned char *done;   /* done[j]: block j decompressed or failed (atomic) */
    int sleepers;          /* scanning threads asleep in wait_block (atomic) */
    long long *results;    /* the codec's answer for a block that failed (or -1) */
    const char **failures; /* what went wrong there */
    int running;           /* handed to the pool (or its threads) and not yet joined */
    /* the pool's bookkeeping, under pool_lock */
    struct Pending_ *queued_next; /* the next job in the pool's queue */
    int queued;            /* in the queue: pool threads may still join it */
    int wanted;            /* how many pool threads it asks for */
    int joined;            /* how many joined it */
    int active;            /* how many are working on it now */
    pid_t owner;           /* the process that started it: a forked child has no such thread */
} Pending;

/* Block j failed. The lowest such block is reported: blocks are taken in order, so every
 * block before it was taken, and finished, by some thread. */
static int fail(Pending *p, Py_ssize_t j, long long result, const char *failure) {
    p->results[j] = result;
    p->failures[j] = failure;
    Py_ssize_t seen = __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE);
    while ((seen < 0 || j < seen) &&
           !__atomic_compare_exchange_n(&p->failed, &seen, j, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
    }
    return 0;
}

/* `length` bytes of the fd at `offset` (retried on EINTR and short reads) */
static int read_range(int fd, char *into, Py_ssize_t length, off_t offset) {
    Py_ssize_t done = 0;
    while (done < length) {
        ssize_t got = pread(fd, into + done, length - done, offset + done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        done += got;
    }
    return 0;
}

/* Block j: read, checked, decompressed. 1, or 0 when it failed. */
static int decompress_one(Pending *p, ZSTD_DCtx *dctx, Py_ssize_t j) {
    const char *in;
    Py_ssize_t length, size = p->sizes[j];
    if (p->fd >= 0) {
        in = (const char *)p->stored.buf + p->starts[j];
        length = p->stored_sizes[j];
        if (read_range(p->fd, (char *)in, length, p->offset + p->starts[j]) < 0)
            return fail(p, j, -1, "cannot be read");
        if (p->checksums != NULL && XXH3_64bits(in, length) != p->checksums[j])
            return fail(p, j, -1, "checksum mismatch");
    } else {
        in = (const char *)p->inputs[j].buf;
        length = p->inputs[j].len;
    }
    if (p->codec == CODEC_LZ4) {
        if (length > INT_MAX || size > INT_MAX) return fail(p, j, -1, "lz4 decompression failed");
        int got = LZ4_decompress_safe(in, p->targets[j], (int)length, (int)size);
        return got == size ? 1 : fail(p, j, got, "lz4 decompression failed");
    }
    /* as ZstdCodec.decode: the frame must declare the size the block index gives */
    unsigned long long declared = ZSTD_getFrameContentSize(in, (size_t)length);
    if (declared != (unsigned long long)size)
        return fail(p, j, declared >= ZSTD_CONTENTSIZE_ERROR ? -1 : (long long)declared,
                    "zstd frame declares another size");
    size_t got = p->ddict != NULL
                     ? ZSTD_decompress_usingDDict(dctx, p->targets[j], (size_t)size, in,
                                                  (size_t)length, p->ddict)
                     : ZSTD_decompressDCtx(dctx, p->targets[j], (size_t)size, in, (size_t)length);
    if (ZSTD_isError(got)) return fail(p, j, -1, "zstd decompression failed");
    return got == (size_t)size ? 1 : fail(p, j, (long long)got, "zstd decompression failed");
}

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_left = PTHREAD_COND_INITIALIZER; /* a thread left a job or a block */

/* Block j done (decompressed or failed), a sleeping wait_block woken. Every block a thread
 * takes is marked, so a taken block is never waited for in vain. */
static void mark_done(Pending *p, Py_ssize_t j) {
    /* seq_cst with wait_block's sleepers count: either it sees done, or this sees it asleep */
    __atomic_store_n(&p->done[j], 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&pool_lock);
        pthread_cond_broadcast(&pool_left);
        pthread_mutex_unlock(&pool_lock);
    }
}

static int decompress_block(Pending *p, ZSTD_DCtx *dctx, Py_ssize_t j) {
    int ok = decompress_one(p, dctx, j);
    mark_done(p, j);
    return ok;
}

/* One thread's share: the next block not yet taken, until none is left or one failed. */
static void work(Pending *p, ZSTD_DCtx *dctx) {
    while (__atomic_load_n(&p->failed, __ATOMIC_RELAXED) < 0) {
        Py_ssize_t j = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (j >= p->count || !decompress_block(p, dctx, j)) return;
    }
}

/* One zstd context kept between the batches a scanning thread helps with (any thread may take
 * it; one that finds none makes its own, and the last one back is kept): a context per batch
 * cost a few microseconds and ~100 KB of memory touched afresh. */
static ZSTD_DCtx *spare_dctx = NULL;

/* The kept context, else a new one (NULL: no memory for one). */
static ZSTD_DCtx *take_context(void) {
    ZSTD_DCtx *dctx = __atomic_exchange_n(&spare_dctx, NULL, __ATOMIC_ACQ_REL);
    return dctx != NULL ? dctx : ZSTD_createDCtx();
}

/* `dctx` kept for the next batch (the one kept before it freed). */
static void keep_context(ZSTD_DCtx *dctx) {
    if (dctx != NULL) ZSTD_freeDCtx(__atomic_exchange_n(&spare_dctx, dctx, __ATOMIC_ACQ_REL));
}

/* The scanning thread helping, or a batch run where no thread can be had. A zstd context of
 * its own while it runs; without one it leaves the blocks to the others. */
static void run(Pending *p) {
    if (__atomic_load_n(&p->next, __ATOMIC_ACQUIRE) >= p->count) return; /* none left to take */
    ZSTD_DCtx *dctx = NULL;
    if (p->codec == CODEC_ZSTD && (dctx = take_context()) == NULL) return;
    work(p, dctx);
    keep_context(dctx);
}

/* ---- the pool: threads kept between batches ----
 * Starting a thread per batch cost the scanning thread ~36 us a batch (start and join), a
 * tenth of a text scan's time besides decoding; a pool thread is woken instead. Threads are
 * added as batches ask for more (up to MAX_THREADS) and never leave; a forked child starts
 * with none (pool_after_fork). */
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER; /* a job was queued */
static Pending *pool_queue = NULL; /* jobs still taking threads, oldest first */
static int pool_size = 0;          /* threads started in this process */

static void pool_after_fork(void) {
    pthread_mutex_init(&pool_lock, NULL);
    pthread_cond_init(&pool_work, NULL);
    pthread_cond_init(&pool_left, NULL);
    pool_queue = NULL;
    pool_size = 0;
}

static void unqueue(Pending *p) { /* under pool_lock */
    if (!p->queued) return;
    Pending **at = &pool_queue;
    while (*at != p) at = &(*at)->queued_next;
    *at = p->queued_next;
    p->queued = 0;
}

static void *pool_thread(void *unused) {
    ZSTD_DCtx *dctx = NULL; /* kept from job to job */
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (pool_queue == NULL) pthread_cond_wait(&pool_work, &pool_lock);
        Pending *p = pool_queue;
        p->active++;
        if (++p->joined >= p->wanted) unqueue(p);
        pthread_mutex_unlock(&pool_lock);
        if (p->codec == CODEC_ZSTD && dctx == NULL) dctx = ZSTD_createDCtx();
        if (p->codec != CODEC_ZSTD || dctx != NULL) work(p, dctx);
        pthread_mutex_lock(&pool_lock);
        if (__atomic_sub_fetch(&p->active, 1, __ATOMIC_RELEASE) == 0)
            pthread_cond_broadcast(&pool_left);
    }
    return NULL;
}

/* Queue `p` for `wanted` pool threads, starting threads up to that many. 0 where the pool has
 * none and none can be started. */
static int pool_submit(Pending *p, int wanted) {
    pthread_mutex_lock(&pool_lock);
    if (pool_size < wanted) { /* once the pool has grown, a batch only queues and wakes */
        pthread_attr_t detached;
        pthread_attr_init(&detached);
        pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
        pthread_t thread;
        while (pool_size < wanted &&
               pthread_create(&thread, &detached, pool_thread, NULL) == 0)
            pool_size++;
        pthread_attr_destroy(&detached);
    }
    int queued = pool_size > 0;
    if (queued) {
        p->wanted = wanted;
        p->queued_next = NULL;
        Pending **at = &pool_queue;
        while (*at != NULL) at = &(*at)->queued_next;
        *at = p;
        p->queued = 1;
        if (wanted == 1) pthread_cond_signal(&pool_work);
        else pthread_cond_broadcast(&pool_work);
    }
    pthread_mutex_unlock(&pool_lock);
    return queued;
}

/* A waiting thread polls for up to SPIN_NS before it sleeps: what it waits for is a block a
 * thread is on, and waking from a sleep costs more. */
#define SPIN_NS 200000

/* One poll of a wait (`polls` counts them, from 0; `start` is set at the first): a pause, and
 * every 256th a look at the clock. 0 once SPIN_NS have passed since the first. */
static int poll_again(struct timespec *start, int *polls) {
    if ((*polls)++ == 0) clock_gettime(CLOCK_MONOTONIC, start);
    if (*polls % 256 != 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        return 1;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000000000L + (now.tv_nsec - start->tv_nsec) < SPIN_NS;
}

/* Polling until the pool threads working on `p` are done (they are on their last blocks: none
 * is left to take), for up to SPIN_NS. */
static void spin_until_left(Pending *p) {
    struct timespec start;
    int polls = 0;
    while (__atomic_load_n(&p->active, __ATOMIC_ACQUIRE) > 0 && poll_again(&start, &polls)) {
    }
}

/* A batch started before this process was forked: its threads are not in this process. */
static void forget_if_forked(Pending *p) {
    if (p->running && getpid() != p->owner) {
        p->running = 0; /* forked while they ran: the copy of its outputs may be half written */
        p->results[0] = -1;
        p->failures[0] = "started before a fork";
        p->failed = 0;
    }
}

/* Wait until no pool thread works on `p` or can still join it; `help`: first take the blocks
 * none has taken yet, rather than wait idle (the scanning thread waits only when it has
 * nothing else to do). */
static void join(Pending *p, int help) {
    forget_if_forked(p);
    if (p->running) {
        Py_BEGIN_ALLOW_THREADS
        if (help) run(p);
        pthread_mutex_lock(&pool_lock);
        unqueue(p);
        if (p->active > 0) {
            pthread_mutex_unlock(&pool_lock);
            spin_until_left(p);
            pthread_mutex_lock(&pool_lock);
        }
        while (p->active > 0) pthread_cond_wait(&pool_left, &pool_lock);
        pthread_mutex_unlock(&pool_lock);
        Py_END_ALLOW_THREADS
        p->running = 0;
    }
    Py_ssize_t taken = __atomic_load_n(&p->next, __ATOMIC_ACQUIRE);
    if (help && p->failed < 0 && taken < p->count) /* no thread had memory for a context */
        fail(p, taken, -1, "zstd decompression failed: no memory for a context");
    if (p->fd >= 0) { /* the threads are done with it */
        close(p->fd);
        p->fd = -1;
    }
}

static void pending_dealloc(Pending *p) {
    /* dropped unread (a scan left early): the threads take no more blocks */
    __atomic_store_n(&p->next, p->count, __ATOMIC_RELEASE);
    join(p, 0);
    ZSTD_freeDDict(p->ddict);
    for (Py_ssize_t j = 0; j < p->held; j++) PyBuffer_Release(&p->inputs[j]);
    if (p->outputs != NULL)
        for (Py_ssize_t j = 0; j < p->count; j++) Py_XDECREF(p->outputs[j]);
    if (p->has_out) PyBuffer_Release(&p->out);
    if (p->stored.obj != NULL) PyBuffer_Release(&p->stored);
    if (p->dict.obj != NULL) PyBuffer_Release(&p->dict);
    PyMem_Free(p->inputs);
    PyMem_Free(p->outputs);
    PyMem_Free(p->targets);
    PyMem_Free(p->sizes);
    PyMem_Free(p->starts);
    PyMem_Free(p->stored_sizes);
    PyMem_Free(p->checksums);
    PyMem_Free(p->results);
    PyMem_Free(p->failures);
    PyMem_Free(p->done);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *failed_block(Pending *p) {
    Py_ssize_t j = p->failed;
    PyErr_Format(PyExc_ValueError, "block %zd: %s (%lld of %zd bytes)", j, p->failures[j],
                 p->results[j], p->sizes[j]);
    return NULL;
}

static PyObject *pending_result(Pending *p, PyObject *unused) {
    join(p, 1);
    if (p->outputs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "result() was taken already");
        return NULL;
    }
    if (p->failed >= 0) return failed_block(p);
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

/* Until block j is done or a block up to j failed: taking blocks none has taken yet (after
 * j only while none failed: the threads stop taking at a failure), else polling for SPIN_NS,
 * else asleep until a thread marks a block. */
static void wait_for(Pending *p, Py_ssize_t j) {
    ZSTD_DCtx *dctx = NULL;
    int have_context = p->codec != CODEC_ZSTD;
    struct timespec start;
    int polls = 0;
    for (;;) {
        if (__atomic_load_n(&p->done[j], __ATOMIC_ACQUIRE)) break;
        Py_ssize_t failed = __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE);
        if (failed >= 0 && failed <= j) break;
        Py_ssize_t next = __atomic_load_n(&p->next, __ATOMIC_ACQUIRE);
        if (next < p->count && (next <= j || failed < 0)) {
            if (!have_context) {
                dctx = take_context();
                have_context = 1;
            }
            Py_ssize_t k = __atomic_fetch_add(&p->next, 1, __ATOMIC_ACQ_REL);
            if (k >= p->count) continue;
            if (dctx == NULL && p->codec == CODEC_ZSTD) {
                fail(p, k, -1, "zstd decompression failed: no memory for a context");
                mark_done(p, k);
            } else {
                decompress_block(p, dctx, k);
            }
            continue;
        }
        if (poll_again(&start, &polls)) continue; /* block j is being decompressed by a thread */
        pthread_mutex_lock(&pool_lock);
        __atomic_fetch_add(&p->sleepers, 1, __ATOMIC_SEQ_CST);
        while (!__atomic_load_n(&p->done[j], __ATOMIC_SEQ_CST))
            pthread_cond_wait(&pool_left, &pool_lock);
        __atomic_fetch_sub(&p->sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&pool_lock);
    }
    keep_context(dctx);
}

static PyObject *pending_wait_block(Pending *p, PyObject *arg) {
    Py_ssize_t j = PyLong_AsSsize_t(arg);
    if (j == -1 && PyErr_Occurred()) return NULL;
    if (j < 0 || j >= p->count) {
        PyErr_Format(PyExc_IndexError, "block %zd of a batch of %zd", j, p->count);
        return NULL;
    }
    forget_if_forked(p);
    /* also when no pool thread ran it: a block left untaken for want of a context is taken
     * (and named) here */
    if (!__atomic_load_n(&p->done[j], __ATOMIC_ACQUIRE)) {
        Py_BEGIN_ALLOW_THREADS
        wait_for(p, j);
        Py_END_ALLOW_THREADS
    }
    Py_ssize_t failed = __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE);
    if (failed >= 0 && failed <= j) return failed_block(p);
    if (p->has_out) Py_RETURN_NONE;
    if (p->outputs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "result() was taken already");
        return NULL;
    }
    return Py_NewRef(p->outputs[j]);
}

/* No thread takes another block; returns once none works on the batch (a scan left early:
 * the blocks it will not ask for are not decompressed, and its buffers can be reused). */
static PyObject *pending_stop(Pending *p, PyObject *unused) {
    __atomic_store_n(&p->next, p->count, __ATOMIC_RELEASE);
    join(p, 0);
    Py_RETURN_NONE;
}

static PyMethodDef pending_methods[] = {
    {"stop", (PyCFunction)pending_stop, METH_NOARGS,
     "Take no more blocks; wait until no thread works on the batch."},
    {"result", (PyCFunction)pending_result, METH_NOARGS, "The raw blocks (waits for the threads)."},
    {"wait_block", (PyCFunction)pending_wait_block, METH_O,
     "wait_block(j): wait until block j is decompressed (helping meanwhile)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shardpack.codecs._native_batch.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Blocks being decompressed on native threads.",
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
    p->sleepers = 0;
    p->running = 0;
    p->queued_next = NULL;
    p->queued = p->wanted = p->joined = p->active = 0;
    p->codec = CODEC_LZ4;
    p->threads = 1;
    p->dict.obj = NULL;
    p->ddict = NULL;
    p->next = 0;
    Py_ssize_t n = count ? count : 1;
    p->inputs = PyMem_Calloc(n, sizeof(Py_buffer));
    p->outputs = PyMem_Calloc(n, sizeof(PyObject *));
    p->targets = PyMem_Calloc(n, sizeof(char *));
    p->sizes = PyMem_Calloc(n, sizeof(Py_ssize_t));
    p->results = PyMem_Calloc(n, sizeof(long long));
    p->failures = PyMem_Calloc(n, sizeof(const char *));
    p->done = PyMem_Calloc(n, 1);
    if (p->inputs == NULL || p->outputs == NULL || p->targets == NULL || p->sizes == NULL ||
        p->results == NULL || p->failures == NULL || p->done == NULL) {
        Py_DECREF(p);
        PyErr_NoMemory();
        return NULL;
    }
    return p;
}

/* The raw sizes (for lz4 bounded by what it can expand the stored sizes to, ~255x; a zstd
 * block's by the file's checked maximum, as the caller's), and where each block goes: `out`
 * back to back when given, else bytes of its own. */
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
        if (size < 0 || (p->codec == CODEC_LZ4 && size > 255 * stored_lengths[j] + 64)) {
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

/* Hand the batch to the pool's threads, which start on it at once. */
static PyObject *launch(Pending *p) {
    p->owner = getpid();
    if (p->dict.obj != NULL) {
        p->ddict = ZSTD_createDDict(p->dict.buf, (size_t)p->dict.len);
        if (p->ddict == NULL) {
            Py_DECREF(p);
            PyErr_SetString(PyExc_ValueError, "unusable zstd dictionary");
            return NULL;
        }
    }
    int wanted = p->threads < p->count ? p->threads : (int)(p->count ? p->count : 1);
    if (pool_submit(p, wanted)) {
        p->running = 1;
    } else { /* no thread to be had: the work here, still without the GIL */
        Py_BEGIN_ALLOW_THREADS
        run(p);
        Py_END_ALLOW_THREADS
    }
    return (PyObject *)p;
}

/* The codec, the thread count and the dictionary, checked; the dictionary held. */
static int configure(Pending *p, PyObject *codec, PyObject *threads, PyObject *dictionary) {
    long c = PyLong_AsLong(codec), t = PyLong_AsLong(threads);
    if (PyErr_Occurred()) return -1;
    if (c != CODEC_LZ4 && c != CODEC_ZSTD) {
        PyErr_Format(PyExc_ValueError, "unknown codec %ld", c);
        return -1;
    }
    if (t < 1 || t > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be 1 to %d, got %ld", MAX_THREADS, t);
        return -1;
    }
    p->codec = (int)c;
    p->threads = (int)t;
    if (dictionary == Py_None) return 0;
    if (c != CODEC_ZSTD) {
        PyErr_SetString(PyExc_ValueError, "only zstd takes a dictionary");
        return -1;
    }
    if (PyObject_GetBuffer(dictionary, &p->dict, PyBUF_SIMPLE) < 0) {
        p->dict.obj = NULL;
        return -1;
    }
    return 0;
}

static PyObject *start(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        PyList_GET_SIZE(args[1]) != PyList_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_TypeError, "start(codec, stored: list, raw_sizes: list, out, "
                                         "threads, dictionary), lists of one length");
        return NULL;
    }
    Pending *p = pending_new(PyList_GET_SIZE(args[1]));
    if (p == NULL) return NULL;
    Py_ssize_t *lengths = PyMem_Calloc(p->count ? p->count : 1, sizeof(Py_ssize_t));
    if (lengths == NULL) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    if (configure(p, args[0], args[4], args[5]) < 0) goto fail;
    for (Py_ssize_t j = 0; j < p->count; j++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(args[1], j), &p->inputs[j], PyBUF_SIMPLE) < 0)
            goto fail;
        p->held = j + 1;
        lengths[j] = p->inputs[j].len;
    }
    if (place_outputs(p, args[2], lengths, args[3]) < 0) goto fail;
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
    if (nargs != 11 || !PyList_Check(args[4]) || !PyList_Check(args[5]) ||
        !PyList_Check(args[6]) || (args[7] != Py_None && !PyList_Check(args[7]))) {
        PyErr_SetString(PyExc_TypeError,
                        "read(codec, fd, offset, stored_buf, starts: list, stored_sizes: list, "
                        "raw_sizes: list, checksums, out, threads, dictionary)");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(args[4]);
    if (PyList_GET_SIZE(args[5]) != count || PyList_GET_SIZE(args[6]) != count ||
        (args[7] != Py_None && PyList_GET_SIZE(args[7]) != count)) {
        PyErr_SetString(PyExc_TypeError, "read(): the lists must be of one length");
        return NULL;
    }
    int fd = PyLong_AsLong(args[1]);
    long long offset = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "read(): a negative offset");
        return NULL;
    }
    Pending *p = pending_new(count);
    if (p == NULL) return NULL;
    p->offset = (off_t)offset;
    if (configure(p, args[0], args[9], args[10]) < 0) goto fail;
    if (PyObject_GetBuffer(args[3], &p->stored, PyBUF_WRITABLE) < 0) {
        p->stored.obj = NULL;
        goto fail;
    }
    if (ssize_list(args[4], count, &p->starts) < 0) goto fail;
    if (ssize_list(args[5], count, &p->stored_sizes) < 0) goto fail;
    for (Py_ssize_t j = 0; j < count; j++) { /* every block inside the stored buffer */
        if (p->starts[j] < 0 || p->stored_sizes[j] < 0 ||
            p->stored_sizes[j] > p->stored.len - p->starts[j]) {
            PyErr_Format(PyExc_ValueError, "block %zd lies outside the stored buffer", j);
            goto fail;
        }
    }
    if (args[7] != Py_None) {
        p->checksums = PyMem_Calloc(count ? count : 1, sizeof(uint64_t));
        if (p->checksums == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t j = 0; j < count; j++) {
            p->checksums[j] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(args[7], j));
            if (PyErr_Occurred()) goto fail;
        }
    }
    if (place_outputs(p, args[6], p->stored_sizes, args[8]) < 0) goto fail;
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
     "start(codec, stored, raw_sizes, out, threads, dictionary): decompress blocks on native "
     "threads"},
    {"read", (PyCFunction)(void (*)(void))read_blocks, METH_FASTCALL,
     "read(codec, fd, offset, stored_buf, starts, stored_sizes, raw_sizes, checksums, out, "
     "threads, dictionary): read, check and decompress blocks of a local file on native "
     "threads"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native_batch",
    "LZ4 and zstd blocks decompressed off the GIL (optional)", -1, methods,
};

PyMODINIT_FUNC PyInit__native_batch(void) {
    if (PyType_Ready(&PendingType) < 0) return NULL;
    if (pthread_atfork(NULL, NULL, pool_after_fork) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot register the thread pool's fork handler");
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddIntConstant(module, "LZ4", CODEC_LZ4) < 0 ||
        PyModule_AddIntConstant(module, "ZSTD", CODEC_ZSTD) < 0 ||
        PyModule_AddIntConstant(module, "MAX_THREADS", MAX_THREADS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
