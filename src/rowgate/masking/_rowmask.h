/* What the two files of rowgate.masking._rowmask share: a column of the compiled plan, and
 * the value functions of _rowmask_values.c that the row loop in _rowmask.c calls. */
#ifndef ROWGATE_ROWMASK_H
#define ROWGATE_ROWMASK_H

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: copying the absorbed pads is a struct copy */
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

enum { K_PASS = 0, K_CONSTANT = 1, K_CACHED = 2, K_UNCACHED = 3, K_LABEL = 4, K_PARTIAL = 5, K_RESHAPE = 6 };

enum { SHAPE_KEEP_LAST = 0, SHAPE_EMAIL = 1, SHAPE_INITIALS = 2 };

#define ATTEMPTS 8     /* shaped pseudonyms: derivations tried before redacting (strategies._ATTEMPTS) */
#define RESHAPE_MAX 252 /* longer values are reshaped by the Python function */

#define LABEL_MAX 128

typedef struct {
    int kind;
    PyObject *constant; /* K_CONSTANT: the value with its length field, or the NULL marker */
    PyObject *fn;       /* bytes -> bytes | None; for K_LABEL, K_PARTIAL, K_RESHAPE the fallback */
    PyObject *cache;    /* K_CACHED: dict value -> masked value, or `same` */
    PyObject *prefix;   /* K_LABEL: the MAC's message prefix; K_RESHAPE: one per attempt (a tuple) */
    int letters;        /* K_RESHAPE: letters become letters too (national ids; phones keep them) */
    int prefilter;      /* K_CACHED: values `suspicious` rejects are unchanged, fn is not called */
    SHA256_CTX inner, outer;
    char head[LABEL_MAX], tail[LABEL_MAX];
    Py_ssize_t head_len, tail_len, size, stretch_after; /* values longer than that stretch the MAC */
    char out[LABEL_MAX * 3];
    /* K_PARTIAL (strategies._partial) of an email (SHAPE_EMAIL: first character and domain), a
     * name (SHAPE_INITIALS), or a phone or national id (SHAPE_KEEP_LAST): values with fewer than
     * min_count digits (alphanumerics with count_alnum) are redacted, else all but the last
     * keep_many (keep_few below many_at) alphanumerics become '*'; a phone's extension is cut */
    int shape, extension, count_alnum;
    Py_ssize_t min_count, many_at, keep_many, keep_few;
} Column;

/* the pseudonym of an ASCII value into c->out: its length, 0 when the Python function must
 * decide (it equals the value), -1 with an error set */
Py_ssize_t rm_label(EVP_MD_CTX *shake, Column *c, const unsigned char *v, Py_ssize_t n);
/* a new bytes object; NULL with an error set, or with none when the Python function must do it */
PyObject *rm_reshape(EVP_MD_CTX *shake, const Column *c, const unsigned char *v, Py_ssize_t n);
/* a new bytes object, or NULL with an error set */
PyObject *rm_partial(const Column *c, const unsigned char *v, Py_ssize_t n);
int rm_suspicious(const unsigned char *v, Py_ssize_t n);
int rm_ascii(const unsigned char *v, Py_ssize_t n);

#endif
