/* The DataRow loop of rowgate.masking.rewrite.RowRewriter, compiled.
 *
 * rewrite.py holds the reference implementation and the plan; this module runs the same
 * plan over the same bytes and must give the same result, byte for byte and error for
 * error (tests/masking/test_compiled_rows.py compares the two on generated and malformed
 * rows). It exists because the per-row cost of the Python loop was most of what a masked
 * read costs. The common strategies for ASCII values (label and shaped pseudonyms from
 * HMAC-SHA256 with the key's pads absorbed once, partial values, the content pre-filter) are
 * in _rowmask_values.c; anything rarer calls the Python function.
 *
 * Every length read from the wire is checked against the end of its row before it is
 * used; a row that does not parse raises Malformed and nothing of the batch is returned.
 */
#include "_rowmask.h"


typedef struct {
    Py_ssize_t at, after; /* the replaced bytes: a value with its length field */
    const char *bytes;    /* what replaces them (with its length field when `framed`) */
    Py_ssize_t len;
    int framed;
    PyObject *owned; /* a reference to release once the row is written */
} Replacement;

typedef struct {
    PyObject_HEAD
    Py_ssize_t ncols;
    Column *cols;
    Replacement *repl;
    PyObject *same;
    Py_ssize_t cache_limit;
    long long rows; /* rows seen over all calls: when a cache fills, how fast it did */
    int busy;       /* repl is in use: a masking function must not call rewrite() again */
    EVP_MD_CTX *shake;
} Rewriter;

static PyObject *Malformed;

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_put(Out *o, const char *p, Py_ssize_t n) {
    if (n <= 0)
        return 0;
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n) {
            if (cap > PY_SSIZE_T_MAX / 2) {
                PyErr_NoMemory();
                return -1;
            }
            cap *= 2;
        }
        char *nb = PyMem_Realloc(o->buf, (size_t)cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->buf = nb;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

static int32_t be32(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static void put32(unsigned char *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)(u >> 24);
    p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8);
    p[3] = (unsigned char)u;
}

static void release(Replacement *r, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++)
        Py_CLEAR(r[k].owned);
}

static void clear_columns(Rewriter *self) {
    if (self->cols != NULL) {
        for (Py_ssize_t i = 0; i < self->ncols; i++) {
            Py_CLEAR(self->cols[i].constant);
            Py_CLEAR(self->cols[i].fn);
            Py_CLEAR(self->cols[i].cache);
            Py_CLEAR(self->cols[i].prefix);
        }
        PyMem_Free(self->cols);
    }
    self->cols = NULL;
    self->ncols = 0;
    PyMem_Free(self->repl);
    self->repl = NULL;
    Py_CLEAR(self->same);
}

static void Rewriter_dealloc(Rewriter *self) {
    clear_columns(self);
    if (self->shake != NULL)
        EVP_MD_CTX_free(self->shake);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int absorb(SHA256_CTX *ctx, PyObject *block) {
    if (!PyBytes_Check(block) || PyBytes_GET_SIZE(block) != SHA256_CBLOCK) {
        PyErr_SetString(PyExc_ValueError, "an HMAC key pad must be 64 bytes");
        return -1;
    }
    SHA256_Init(ctx);
    SHA256_Update(ctx, PyBytes_AS_STRING(block), SHA256_CBLOCK);
    return 0;
}

/* A pseudonym column's HMAC: the key's pads absorbed, its fallback function and message
 * prefix(es) held, and the SHAKE context its stretched MACs share */
static int keyed(Rewriter *self, Column *c, PyObject *fn, PyObject *prefix, PyObject *ipad, PyObject *opad) {
    if (absorb(&c->inner, ipad) < 0 || absorb(&c->outer, opad) < 0)
        return -1;
    c->fn = Py_NewRef(fn);
    c->prefix = Py_NewRef(prefix);
    if (self->shake == NULL && (self->shake = EVP_MD_CTX_new()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int copy_text(char *dst, Py_ssize_t *dst_len, PyObject *src) {
    if (!PyBytes_Check(src) || PyBytes_GET_SIZE(src) >= LABEL_MAX) {
        PyErr_SetString(PyExc_ValueError, "a pseudonym's head and tail must be short bytes");
        return -1;
    }
    *dst_len = PyBytes_GET_SIZE(src);
    memcpy(dst, PyBytes_AS_STRING(src), (size_t)*dst_len);
    return 0;
}

/* columns: per column one of (0,), (1, constant), (2, fn, cache), (3, fn),
 * (4, fn, prefix, inner_pad, outer_pad, head, tail, size, stretch_after),
 * (5, fn, shape, extension, count_alnum, min_count, many_at, keep_many, keep_few),
 * (6, fn, prefixes (one per attempt), inner_pad, outer_pad, letters) */
static int Rewriter_init(Rewriter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"columns", "same", "cache_limit", NULL};
    PyObject *columns, *same;
    Py_ssize_t cache_limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn", kwlist, &columns, &same, &cache_limit))
        return -1;
    if (self->cols != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Rewriter is initialised once");
        return -1;
    }
    /* a tuple of our own: parsing a spec may run Python code (__index__), which must not be
     * able to free the specs we read */
    PyObject *seq = PySequence_Tuple(columns);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    self->cols = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Column));
    self->repl = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Replacement));
    if (self->cols == NULL || self->repl == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    self->ncols = n;
    self->same = Py_NewRef(same);
    self->cache_limit = cache_limit;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *spec = PyTuple_GET_ITEM(seq, i);
        Column *c = &self->cols[i];
        PyObject *a = NULL, *b = NULL, *ipad = NULL, *opad = NULL, *head = NULL, *tail = NULL;
        static const char *formats[] = {"i", "iO", "iOO|p", "iO", "iOOOOOOnn", "iOippnnnn", "iOOOOp"};
        long kind = PyTuple_Check(spec) && PyTuple_GET_SIZE(spec) >= 1 ? PyLong_AsLong(PyTuple_GET_ITEM(spec, 0)) : -1;
        if (kind < 0 || kind > K_RESHAPE) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a column spec must be a tuple starting with a known kind");
            goto fail;
        }
        int ok;
        switch (kind) {
        case K_LABEL:
            ok = PyArg_ParseTuple(spec, formats[kind], &c->kind, &a, &b, &ipad, &opad, &head, &tail, &c->size,
                                  &c->stretch_after);
            break;
        case K_PARTIAL:
            ok = PyArg_ParseTuple(spec, formats[kind], &c->kind, &a, &c->shape, &c->extension, &c->count_alnum,
                                  &c->min_count, &c->many_at, &c->keep_many, &c->keep_few);
            break;
        case K_RESHAPE:
            ok = PyArg_ParseTuple(spec, formats[kind], &c->kind, &a, &b, &ipad, &opad, &c->letters);
            break;
        case K_CACHED:
            ok = PyArg_ParseTuple(spec, formats[kind], &c->kind, &a, &b, &c->prefilter);
            break;
        default:
            ok = PyArg_ParseTuple(spec, formats[kind], &c->kind, &a, &b);
        }
        if (!ok)
            goto fail;
        switch (c->kind) {
        case K_PASS:
            break;
        case K_CONSTANT:
            if (a == NULL || !PyBytes_Check(a) || PyBytes_GET_SIZE(a) < 4) {
                PyErr_SetString(PyExc_TypeError, "a constant column needs its framed value");
                goto fail;
            }
            c->constant = Py_NewRef(a);
            break;
        case K_CACHED:
            if (b == NULL || !PyDict_Check(b)) {
                PyErr_SetString(PyExc_TypeError, "a cached column needs a dict");
                goto fail;
            }
            c->cache = Py_NewRef(b);
            /* fall through */
        case K_UNCACHED:
            if (a == NULL || !PyCallable_Check(a)) {
                PyErr_SetString(PyExc_TypeError, "a mapped column needs a function");
                goto fail;
            }
            c->fn = Py_NewRef(a);
            break;
        case K_LABEL:
            if (a == NULL || !PyCallable_Check(a) || b == NULL || !PyBytes_Check(b) || tail == NULL ||
                c->size <= 0 || c->size > 32 || c->stretch_after <= 0) {
                PyErr_SetString(PyExc_TypeError, "a label pseudonym column needs fn, prefix, pads, head, tail, size");
                goto fail;
            }
            if (copy_text(c->head, &c->head_len, head) < 0 || copy_text(c->tail, &c->tail_len, tail) < 0 ||
                keyed(self, c, a, b, ipad, opad) < 0)
                goto fail;
            break;
        case K_RESHAPE:
            if (!PyCallable_Check(a) || !PyTuple_Check(b) || PyTuple_GET_SIZE(b) != ATTEMPTS) {
                PyErr_SetString(PyExc_TypeError, "a reshaped pseudonym column needs fn, 8 prefixes and pads");
                goto fail;
            }
            for (Py_ssize_t k = 0; k < ATTEMPTS; k++)
                if (!PyBytes_Check(PyTuple_GET_ITEM(b, k))) {
                    PyErr_SetString(PyExc_TypeError, "a reshaped pseudonym's prefixes must be bytes");
                    goto fail;
                }
            if (keyed(self, c, a, b, ipad, opad) < 0)
                goto fail;
            break;
        case K_PARTIAL:
            if (!PyCallable_Check(a) || c->shape < SHAPE_KEEP_LAST || c->shape > SHAPE_INITIALS || c->keep_many < 0 ||
                c->keep_few < 0) {
                PyErr_SetString(PyExc_TypeError, "a partial column needs fn, shape, extension, count_alnum and 4 counts");
                goto fail;
            }
            c->fn = Py_NewRef(a);
            break;
        default:
            PyErr_Format(PyExc_ValueError, "unknown column kind %d", c->kind);
            goto fail;
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    clear_columns(self); /* a Rewriter that failed to initialise refuses to rewrite */
    return -1;
}

/* A full cache starts afresh, or is given up when it filled about as fast as rows came
 * (values that hardly repeat): as RowRewriter._cache_full. */
static void cache_full(Rewriter *self, Column *c, long long rows) {
    PyDict_Clear(c->cache);
    if (rows < (long long)(self->cache_limit * 9 / 8))
        c->kind = K_UNCACHED;
}

static int malformed(void) {
    PyErr_SetString(Malformed, "malformed DataRow");
    return -1;
}

/* Maps one value through the column's function (and cache): 1 when it is unchanged (the
 * function returned the value object itself), 0 with *out a new reference to None or the
 * masked bytes, -1 on an error. */
static int mapped(Rewriter *self, Column *c, const char *v, Py_ssize_t n, long long rows, PyObject **out) {
    PyObject *value = PyBytes_FromStringAndSize(v, n);
    if (value == NULL)
        return -1;
    PyObject *new = NULL;
    if (c->kind == K_CACHED) {
        PyObject *hit = PyDict_GetItemWithError(c->cache, value);
        if (hit != NULL) {
            new = Py_NewRef(hit == self->same ? value : hit);
        } else if (!PyErr_Occurred() && (new = PyObject_CallOneArg(c->fn, value)) != NULL) {
            PyObject *cache = Py_NewRef(c->cache);
            if (PyDict_GET_SIZE(cache) >= self->cache_limit)
                cache_full(self, c, rows);
            int err = PyDict_SetItem(cache, value, new == value ? self->same : new);
            Py_DECREF(cache);
            if (err < 0)
                Py_CLEAR(new);
        }
    } else {
        new = PyObject_CallOneArg(c->fn, value);
    }
    int unchanged = new == value;
    Py_DECREF(value);
    if (new == NULL)
        return -1;
    if (unchanged) {
        Py_DECREF(new);
        return 1;
    }
    if (new != Py_None && !PyBytes_Check(new)) {
        PyErr_Format(PyExc_TypeError, "a masking function returned %.100s, not bytes or None", Py_TYPE(new)->tp_name);
        Py_DECREF(new);
        return -1;
    }
    *out = new;
    return 0;
}

/* rewrite(data) -> (bytes | None, rows, masked per column) */
static PyObject *Rewriter_rewrite(Rewriter *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "rewrite() takes bytes");
        return NULL;
    }
    if (self->cols == NULL) {
        PyErr_SetString(PyExc_TypeError, "the Rewriter was not initialised");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "rewrite() called again while it runs");
        return NULL;
    }
    self->busy = 1;
    Py_INCREF(arg); /* a function we call must not free the bytes we read */
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(arg);
    const Py_ssize_t n = PyBytes_GET_SIZE(arg), ncols = self->ncols;
    Out out = {NULL, 0, 0};
    Py_ssize_t *masked = PyMem_Calloc((size_t)(ncols ? ncols : 1) * 2, sizeof(Py_ssize_t));
    Py_ssize_t *empty = masked + ncols, nrepl = 0, pos = 0, last = 0;
    long long rows = 0;
    PyObject *result = NULL;
    if (masked == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    while (pos < n) {
        if (data[pos] != 'D' || n - pos < 7) {
            malformed();
            goto done;
        }
        const long long length = be32(data + pos + 1);
        const int count = (int16_t)((data[pos + 5] << 8) | data[pos + 6]);
        if (count != ncols) {
            PyErr_Format(Malformed, "a row has %d values where its result has %zd columns", count, ncols);
            goto done;
        }
        const long long end = (long long)pos + 1 + length;
        if (end > n || length < 6) {
            malformed();
            goto done;
        }
        rows++;
        Py_ssize_t p = pos + 7;
        long long delta = 0;
        nrepl = 0;
        for (Py_ssize_t i = 0; i < ncols; i++) {
            Column *c = &self->cols[i];
            if (end - p < 4) {
                malformed();
                goto done;
            }
            const int32_t size = be32(data + p);
            if (size <= 0) {
                if (size < -1) {
                    malformed();
                    goto done;
                }
                p += 4;
                empty[i]++;
                continue;
            }
            if (end - p - 4 < size) {
                malformed();
                goto done;
            }
            const Py_ssize_t at = p;
            p += 4 + (Py_ssize_t)size;
            if (c->kind == K_PASS)
                continue;
            Replacement *r = &self->repl[nrepl];
            r->at = at;
            r->after = p;
            r->owned = NULL;
            if (c->kind == K_CONSTANT) {
                r->bytes = PyBytes_AS_STRING(c->constant);
                r->len = PyBytes_GET_SIZE(c->constant);
                r->framed = 1;
                delta += r->len - 4 - size;
                nrepl++;
                continue;
            }
            const char *v = (const char *)data + at + 4;
            if (c->kind == K_LABEL && rm_ascii((const unsigned char *)v, size)) {
                Py_ssize_t len = rm_label(self->shake, c, (const unsigned char *)v, size);
                if (len < 0)
                    goto done;
                if (len > 0) {
                    r->bytes = c->out;
                    r->len = len;
                    r->framed = 0;
                    delta += len - size;
                    masked[i]++;
                    nrepl++;
                    continue;
                }
            }
            if (c->prefilter && !rm_suspicious((const unsigned char *)v, size))
                continue;
            PyObject *new = NULL;
            if ((c->kind == K_PARTIAL || c->kind == K_RESHAPE) && rm_ascii((const unsigned char *)v, size)) {
                /* a new object, never the value: changed, as in Python (even where equal) */
                new = c->kind == K_PARTIAL ? rm_partial(c, (const unsigned char *)v, size)
                                             : rm_reshape(self->shake, c, (const unsigned char *)v, size);
            }
            if (new != NULL) {
                r->owned = new;
                r->bytes = PyBytes_AS_STRING(new);
                r->len = PyBytes_GET_SIZE(new);
                r->framed = 0;
                delta += r->len - size;
                masked[i]++;
                nrepl++;
                continue;
            }
            if (PyErr_Occurred())
                goto done;
            int unchanged = mapped(self, c, v, size, self->rows + rows, &new);
            if (unchanged < 0)
                goto done;
            if (unchanged)
                continue;
            r->owned = new;
            nrepl++;
            if (new == Py_None) {
                r->bytes = "\xff\xff\xff\xff";
                r->len = 4;
                r->framed = 1;
                delta -= size;
            } else {
                r->bytes = PyBytes_AS_STRING(new);
                r->len = PyBytes_GET_SIZE(new);
                r->framed = 0;
                delta += r->len - size;
            }
            masked[i]++;
        }
        if (p != end) {
            malformed();
            goto done;
        }
        if (nrepl > 0) {
            const long long new_length = length + delta;
            if (new_length > INT32_MAX) {
                malformed();
                goto done;
            }
            unsigned char header[5] = {'D'};
            put32(header + 1, (int32_t)new_length);
            if (out_put(&out, (const char *)data + last, pos - last) < 0 || out_put(&out, (const char *)header, 5) < 0)
                goto done;
            Py_ssize_t from = pos + 5;
            for (Py_ssize_t k = 0; k < nrepl; k++) {
                Replacement *r = &self->repl[k];
                if (out_put(&out, (const char *)data + from, r->at - from) < 0)
                    goto done;
                if (!r->framed) {
                    unsigned char len[4];
                    put32(len, (int32_t)r->len);
                    if (out_put(&out, (const char *)len, 4) < 0)
                        goto done;
                }
                if (out_put(&out, r->bytes, r->len) < 0)
                    goto done;
                from = r->after;
            }
            if (out_put(&out, (const char *)data + from, (Py_ssize_t)end - from) < 0)
                goto done;
            last = (Py_ssize_t)end;
            release(self->repl, nrepl);
            nrepl = 0;
        }
        pos = (Py_ssize_t)end;
    }
    PyObject *counts = PyList_New(ncols);
    if (counts == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Py_ssize_t k = self->cols[i].kind == K_CONSTANT ? (Py_ssize_t)rows - empty[i] : masked[i];
        PyObject *v = PyLong_FromSsize_t(k);
        if (v == NULL) {
            Py_DECREF(counts);
            goto done;
        }
        PyList_SET_ITEM(counts, i, v);
    }
    PyObject *bytes;
    if (out.len == 0) {
        bytes = Py_NewRef(Py_None);
    } else if (out_put(&out, (const char *)data + last, n - last) < 0 ||
               (bytes = PyBytes_FromStringAndSize(out.buf, out.len)) == NULL) {
        Py_DECREF(counts);
        goto done;
    }
    self->rows += rows;
    result = Py_BuildValue("(NLN)", bytes, rows, counts);
done:
    release(self->repl, nrepl);
    PyMem_Free(out.buf);
    PyMem_Free(masked);
    Py_DECREF(arg);
    self->busy = 0;
    return result;
}

static PyObject *suspicious_py(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "suspicious() takes bytes");
        return NULL;
    }
    return PyBool_FromLong(rm_suspicious((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}

static PyMethodDef module_methods[] = {
    {"suspicious", suspicious_py, METH_O, "suspicious(value) -> bool: the pre-filter of content-scanned columns"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Rewriter_methods[] = {
    {"rewrite", (PyCFunction)Rewriter_rewrite, METH_O,
     "rewrite(data) -> (bytes | None, rows, masked values per column)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RewriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rowgate.masking._rowmask.Rewriter",
    .tp_basicsize = sizeof(Rewriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rewriter(columns, same, cache_limit): a compiled RowRewriter plan",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rewriter_init,
    .tp_dealloc = (destructor)Rewriter_dealloc,
    .tp_methods = Rewriter_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowmask", "The compiled DataRow loop of rowgate.masking.rewrite.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__rowmask(void) {
    if (PyType_Ready(&RewriterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Malformed = PyErr_NewException("rowgate.masking._rowmask.Malformed", PyExc_ValueError, NULL);
    if (Malformed == NULL || PyModule_AddObjectRef(m, "Malformed", Malformed) < 0 ||
        PyModule_AddObjectRef(m, "Rewriter", (PyObject *)&RewriterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
