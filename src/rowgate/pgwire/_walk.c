/* The two walks of rowgate.pgwire.framing.Framer.split over runs of whole messages, compiled.
 *
 * framing.py holds the Python versions (_skip_py, _run_end_py) and uses these when built;
 * tests/pgwire/test_walk.py requires both to stop at the same offset for any bytes. Each
 * walk only reads headers (type byte and length), checks a length before it uses it, and
 * stops at the first message it does not take, leaving that one to the Python loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static long long be32(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static int args(PyObject *const *a, Py_ssize_t na, Py_ssize_t want, const unsigned char **d, Py_ssize_t *n,
                Py_ssize_t *pos, long long *max_length) {
    if (na != want || !PyBytes_Check(a[0])) {
        PyErr_SetString(PyExc_TypeError, "expected (data: bytes, pos: int, ..., max_length: int)");
        return -1;
    }
    *d = (const unsigned char *)PyBytes_AS_STRING(a[0]);
    *n = PyBytes_GET_SIZE(a[0]);
    *pos = PyLong_AsSsize_t(a[1]);
    *max_length = PyLong_AsLongLong(a[na - 1]);
    if (PyErr_Occurred())
        return -1;
    if (*pos < 0 || *pos > *n) {
        PyErr_SetString(PyExc_ValueError, "pos is outside data");
        return -1;
    }
    return 0;
}

/* skip(data, pos, wanted, max_length) -> the offset of the first message from pos on that is
 * wanted (wanted[type] != 0), has a bad header, or is not whole; or where fewer than 5 bytes remain */
static PyObject *skip(PyObject *module, PyObject *const *a, Py_ssize_t na) {
    (void)module;
    const unsigned char *d;
    Py_ssize_t n, pos;
    long long max_length;
    if (args(a, na, 4, &d, &n, &pos, &max_length) < 0)
        return NULL;
    if (!PyBytes_Check(a[2]) || PyBytes_GET_SIZE(a[2]) != 256) {
        PyErr_SetString(PyExc_TypeError, "wanted must be 256 bytes, one per message type");
        return NULL;
    }
    const unsigned char *wanted = (const unsigned char *)PyBytes_AS_STRING(a[2]);
    while (n - pos >= 5) {
        const unsigned char t = d[pos];
        const long long length = be32(d + pos + 1);
        if (wanted[t] || t == 0 || length < 4 || length - 4 > max_length || pos + 1 + length > n)
            break;
        pos += (Py_ssize_t)(1 + length);
    }
    return PyLong_FromSsize_t(pos);
}

/* run_end(data, end, type, max_length) -> the end of the run of whole, well-formed messages of
 * `type` that starts at `end` */
static PyObject *run_end(PyObject *module, PyObject *const *a, Py_ssize_t na) {
    (void)module;
    const unsigned char *d;
    Py_ssize_t n, end;
    long long max_length;
    if (args(a, na, 4, &d, &n, &end, &max_length) < 0)
        return NULL;
    long t = PyLong_AsLong(a[2]);
    if (t == -1 && PyErr_Occurred())
        return NULL;
    while (n - end >= 5 && d[end] == t) {
        const long long length = be32(d + end + 1);
        if (length < 4 || length - 4 > max_length || end + 1 + length > n)
            break;
        end += (Py_ssize_t)(1 + length);
    }
    return PyLong_FromSsize_t(end);
}

static PyMethodDef methods[] = {
    {"skip", (PyCFunction)(void (*)(void))skip, METH_FASTCALL, "skip(data, pos, wanted, max_length) -> pos"},
    {"run_end", (PyCFunction)(void (*)(void))run_end, METH_FASTCALL, "run_end(data, end, type, max_length) -> end"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk", "The compiled message walks of rowgate.pgwire.framing.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
