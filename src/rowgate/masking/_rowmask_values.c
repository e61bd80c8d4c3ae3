/* The masking strategies the compiled row loop (_rowmask.c) does itself, for ASCII values:
 * each is the Python function named in its comment, byte for byte
 * (tests/masking/test_compiled_rows.py compares them). */
#include "_rowmask.h"

/* HMAC-SHA256(key, prefix + v) from the absorbed pads */
static void mac(const Column *c, PyObject *prefix, const unsigned char *v, Py_ssize_t n,
                unsigned char out[SHA256_DIGEST_LENGTH]) {
    unsigned char inner[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = c->inner;
    SHA256_Update(&ctx, PyBytes_AS_STRING(prefix), (size_t)PyBytes_GET_SIZE(prefix));
    SHA256_Update(&ctx, v, (size_t)n);
    SHA256_Final(inner, &ctx);
    ctx = c->outer;
    SHA256_Update(&ctx, inner, sizeof inner);
    SHA256_Final(out, &ctx);
}

/* SHAKE-256(digest), n bytes: how strategies._stream stretches a MAC */
static int stretch(EVP_MD_CTX *shake, const unsigned char digest[SHA256_DIGEST_LENGTH], unsigned char *out, size_t n) {
    if (EVP_DigestInit_ex(shake, EVP_shake256(), NULL) != 1 ||
        EVP_DigestUpdate(shake, digest, SHA256_DIGEST_LENGTH) != 1 ||
        EVP_DigestFinalXOF(shake, out, n) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHAKE-256 failed");
        return -1;
    }
    return 0;
}

/* The pseudonym of an ASCII value into c->out; its length, 0 when the Python function must
 * decide (the pseudonym equals the value), -1 on an OpenSSL failure. */
Py_ssize_t rm_label(EVP_MD_CTX *shake, Column *c, const unsigned char *v, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[SHA256_DIGEST_LENGTH], stretched[32];
    mac(c, c->prefix, v, n, rnd);
    const unsigned char *r = rnd;
    if (n > c->stretch_after) {
        if (stretch(shake, rnd, stretched, (size_t)c->size) < 0)
            return -1;
        r = stretched;
    }
    char *o = c->out;
    memcpy(o, c->head, (size_t)c->head_len);
    o += c->head_len;
    for (Py_ssize_t k = 0; k < c->size; k++) {
        *o++ = hex[r[k] >> 4];
        *o++ = hex[r[k] & 15];
    }
    memcpy(o, c->tail, (size_t)c->tail_len);
    o += c->tail_len;
    Py_ssize_t len = o - c->out;
    if (len == n && memcmp(c->out, v, (size_t)n) == 0)
        return 0;
    return len;
}

/* strategies._leaks: whether `out` (as long as `v`) gives the value away: equal, or sharing
 * 6 characters in a row with it */
static int leaks(const unsigned char *v, const unsigned char *out, Py_ssize_t n) {
    if (memcmp(v, out, (size_t)n) == 0)
        return 1;
    /* values are short: a plain search beats memmem's set-up per window */
    for (Py_ssize_t i = 0; i + 6 <= n; i++)
        for (Py_ssize_t j = 0; j + 6 <= n; j++)
            if (v[j] == out[i] && memcmp(v + j + 1, out + i + 1, 5) == 0)
                return 1;
    return 0;
}

/* strategies._pseudonym of a phone or national id (shape kept: digits stay digits, and with
 * `letters` letters stay letters of their case), ASCII only: a new bytes object, or NULL (with no
 * error set) when the value is too long for this path */
PyObject *rm_reshape(EVP_MD_CTX *shake, const Column *c, const unsigned char *v, Py_ssize_t n) {
    unsigned char digest[SHA256_DIGEST_LENGTH], stretched[RESHAPE_MAX + 4], out[RESHAPE_MAX];
    if (n > RESHAPE_MAX)
        return NULL;
    for (Py_ssize_t attempt = 0; attempt < ATTEMPTS; attempt++) {
        mac(c, PyTuple_GET_ITEM(c->prefix, attempt), v, n, digest);
        const unsigned char *rnd = digest;
        if (n + 4 > SHA256_DIGEST_LENGTH) { /* _stream: n + 4 bytes */
            if (stretch(shake, digest, stretched, (size_t)n + 4) < 0)
                return NULL;
            rnd = stretched;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char ch = v[i];
            if (ch >= '0' && ch <= '9')
                out[i] = (unsigned char)('0' + rnd[i] % 10);
            else if (c->letters && ch >= 'A' && ch <= 'Z')
                out[i] = (unsigned char)('A' + rnd[i] % 26);
            else if (c->letters && ch >= 'a' && ch <= 'z')
                out[i] = (unsigned char)('a' + rnd[i] % 26);
            else
                out[i] = ch;
        }
        if (!leaks(v, out, n))
            return PyBytes_FromStringAndSize((const char *)out, n);
    }
    return PyBytes_FromStringAndSize("****", 4);
}

static int has(const unsigned char *v, Py_ssize_t n, const char *word, int fold) {
    const Py_ssize_t k = (Py_ssize_t)strlen(word);
    for (Py_ssize_t i = 0; i + k <= n; i++) {
        Py_ssize_t j = 0;
        while (j < k && (fold && v[i + j] >= 'A' && v[i + j] <= 'Z' ? v[i + j] | 0x20 : v[i + j]) == (unsigned char)word[j])
            j++;
        if (j == k)
            return 1;
    }
    return 0;
}

/* rewrite.suspicious: whether the content detectors could find anything in the value (a
 * superset of what they find; tests require it to say yes wherever the Python one does) */
int rm_suspicious(const unsigned char *v, Py_ssize_t n) {
    static const char *const keywords[] = {"pass", "pwd", "secret", "token", "key", "auth"};
    int digits = 0;    /* a digit seen, and since then only what may separate digits */
    Py_ssize_t run = 0; /* token-like characters in a row */
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char ch = v[i];
        if (ch == '@' || ch == '$' || ch == ':' || ch >= 0x80)
            return 1;
        if (ch >= '0' && ch <= '9') {
            if (digits)
                return 1;
            digits = 1;
        } else if (!(ch == ' ' || (ch >= 9 && ch <= 13) || ch == '(' || ch == ')' || ch == '.' || ch == '-' ||
                     ch == '/')) {
            digits = 0;
        }
        run = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || ch == '+' || ch == '/' ||
                      ch == '_' || ch == '-'
                  ? run + 1
                  : 0;
        if (run >= 20)
            return 1;
    }
    if (has(v, n, "eyJ", 0) || has(v, n, "-----BEGIN", 0))
        return 1;
    for (size_t k = 0; k < sizeof keywords / sizeof *keywords; k++)
        if (has(v, n, keywords[k], 1))
            return 1;
    return 0;
}

/* str.isspace, str.isdigit, str.isalnum of an ASCII character */
static int py_space(unsigned char ch) { return ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 0x1c && ch <= 0x1f); }
static int py_digit(unsigned char ch) { return ch >= '0' && ch <= '9'; }
static int py_alpha(unsigned char ch) { return (ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'; }
static int py_alnum(unsigned char ch) { return py_digit(ch) || py_alpha(ch); }

/* Where `(?i)x\s?\d` or `(?i)ext\.?\s?\d` matches at v[j] (each optional part is of a class
 * the next cannot match, so taking it whenever it is there is what backtracking finds) */
static int extension_at(const unsigned char *v, Py_ssize_t j, Py_ssize_t end) {
    Py_ssize_t k;
    if ((v[j] | 0x20) == 'x') {
        k = j + 1;
    } else if ((v[j] | 0x20) == 'e' && end - j >= 3 && (v[j + 1] | 0x20) == 'x' && (v[j + 2] | 0x20) == 't') {
        k = j + 3;
        if (k < end && v[k] == '.')
            k++;
    } else {
        return 0;
    }
    if (k < end && py_space(v[k]))
        k++;
    return k < end && py_digit(v[k]);
}

/* `v.rpartition("@")`: first character and domain, or redacted */
static PyObject *partial_email(const unsigned char *v, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t at = end - 1;
    while (at >= start && v[at] != '@')
        at--;
    if (at <= start || at + 1 >= end)
        return PyBytes_FromStringAndSize("****", 4);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 1 + 4 + (end - at - 1));
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    o[0] = (char)v[start];
    memcpy(o + 1, "***@", 4);
    memcpy(o + 5, v + at + 1, (size_t)(end - at - 1));
    return out;
}

/* `" ".join(w[0] + "." for w in v.split() if w[:1].isalpha())`, or redacted */
static PyObject *partial_initials(const unsigned char *v, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t words = 0;
    for (Py_ssize_t j = start; j < end; j++)
        if ((j == start || py_space(v[j - 1])) && !py_space(v[j]) && py_alpha(v[j]))
            words++;
    if (words == 0)
        return PyBytes_FromStringAndSize("****", 4);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 3 * words - 1);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t j = start; j < end; j++)
        if ((j == start || py_space(v[j - 1])) && !py_space(v[j]) && py_alpha(v[j])) {
            if (o != PyBytes_AS_STRING(out))
                *o++ = ' ';
            *o++ = (char)v[j];
            *o++ = '.';
        }
    return out;
}

/* strategies._partial of an ASCII value: a new bytes object */
PyObject *rm_partial(const Column *c, const unsigned char *v, Py_ssize_t n) {
    Py_ssize_t start = 0, end = n;
    while (start < end && py_space(v[start]))
        start++;
    while (end > start && py_space(v[end - 1]))
        end--;
    if (c->shape == SHAPE_EMAIL)
        return partial_email(v, start, end);
    if (c->shape == SHAPE_INITIALS)
        return partial_initials(v, start, end);
    Py_ssize_t main_end = end;
    if (c->extension) /* re.split(r"(?i)\s?(?:x|ext\.?)\s?\d", v, maxsplit=1)[0] */
        for (Py_ssize_t j = start; j < end; j++)
            if (extension_at(v, j, end) || (py_space(v[j]) && j + 1 < end && extension_at(v, j + 1, end))) {
                main_end = j;
                break;
            }
    Py_ssize_t counted = 0, alnum = 0;
    for (Py_ssize_t j = start; j < (c->count_alnum ? end : main_end); j++)
        counted += c->count_alnum ? py_alnum(v[j]) : py_digit(v[j]);
    if (counted < c->min_count)
        return PyBytes_FromStringAndSize("****", 4);
    for (Py_ssize_t j = start; j < main_end; j++)
        alnum += py_alnum(v[j]);
    Py_ssize_t keep = counted >= c->many_at ? c->keep_many : c->keep_few, i = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, main_end - start);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t j = start; j < main_end; j++) {
        if (py_alnum(v[j]))
            *o++ = i++ < alnum - keep ? '*' : (char)v[j];
        else
            *o++ = (char)v[j];
    }
    return out;
}

int rm_ascii(const unsigned char *v, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++)
        if (v[k] & 0x80)
            return 0;
    return 1;
}

