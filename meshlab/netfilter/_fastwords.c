/* The words of the lines a big dump is made of, found without making the words not needed.

   Optional speed-ups of two functions of the rule parser's fast path, which say what they do
   and are the reference: meshlab.netfilter.shapes.match_line (a rule line -A CHAIN ...) and
   meshlab.netfilter.source.chain_header (a user chain header :NAME - [0:0]). The tests hold
   each pair to the same answers. A 20,000-rule dump has ~16 words per rule line, and making
   each of them a Python string costs more than everything else the parser does with the
   line; a shape plan only needs the few words that are values (an address, a comment, a
   chain), the others only have to be the plan's literal words. So a line is split here into
   (start, end) positions, the literal words are compared in place, and strings are made only
   for the values.

   Only lines that split simply are taken: ASCII, words separated by blanks (space, \t, \r,
   \v, \f), a quoted word being "..." with no backslash inside and a blank or the end of the
   line after it. Anything else (a backslash escape, a quote inside a word, another control
   character, more than MAX_WORDS words) gives None, and the Python reader reads the line.
   For the lines it takes, the words are exactly those iptables-restore (and
   meshlab.netfilter.source.restore_split) would give. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_WORDS 64

typedef struct {
    Py_ssize_t start, end; /* a quoted word: its text inside the quotes */
} Word;

static int is_blank(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* The words of s[0:n] into words[]; their number, or -1 for a line left to Python. */
static int split_words(const unsigned char *s, Py_ssize_t n, Word *words) {
    int count = 0;
    Py_ssize_t i = 0;
    for (;;) {
        while (i < n && is_blank(s[i]))
            i++;
        if (i >= n)
            return count;
        if (count == MAX_WORDS)
            return -1;
        Py_ssize_t j;
        if (s[i] == '"') {
            for (j = i + 1; j < n && s[j] != '"'; j++)
                if (s[j] == '\\')
                    return -1; /* an escape: Python reads it */
            if (j >= n)
                return -1; /* unterminated: Python words the error */
            words[count].start = i + 1;
            words[count].end = j;
            i = j + 1;
            if (i < n && !is_blank(s[i]))
                return -1; /* "a"b: two words in iptables-restore; Python reads it */
        } else {
            for (j = i; j < n && !is_blank(s[j]); j++)
                if (s[j] == '"' || s[j] < 0x20)
                    return -1; /* a quote inside a word, or a control character */
            words[count].start = i;
            words[count].end = j;
            i = j;
        }
        count++;
    }
}

static int word_is(const unsigned char *s, const Word *w, PyObject *literal) {
    Py_ssize_t len = w->end - w->start;
    return PyUnicode_IS_ASCII(literal) && PyUnicode_GET_LENGTH(literal) == len &&
           memcmp(PyUnicode_DATA(literal), s + w->start, (size_t)len) == 0;
}

PyDoc_STRVAR(match_line_doc,
"match_line(line, table) -> (plan, chain, values) | None\n\n"
"The plan for the rule line ``-A CHAIN ...``: ``table`` maps a number of words to a list of\n"
"(pattern, plan), a pattern giving each word (a literal str, or None for a value). Returns\n"
"the first plan whose literals all match, the chain (word 1) and the other values in order;\n"
"None if none matches or the line is not one this speed-up splits.");

static PyObject *match_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "match_line(line: str, table: dict)");
        return NULL;
    }
    PyObject *line = args[0], *table = args[1];
    if (!PyUnicode_IS_ASCII(line))
        Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_DATA(line);
    Word words[MAX_WORDS];
    int count = split_words(s, PyUnicode_GET_LENGTH(line), words);
    if (count < 3)
        Py_RETURN_NONE;
    PyObject *key = PyLong_FromLong(count);
    if (key == NULL)
        return NULL;
    PyObject *candidates = PyDict_GetItemWithError(table, key); /* borrowed */
    Py_DECREF(key);
    if (candidates == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyList_Check(candidates)) {
        PyErr_SetString(PyExc_TypeError, "match_line: table values must be lists");
        return NULL;
    }
    for (Py_ssize_t c = 0; c < PyList_GET_SIZE(candidates); c++) {
        PyObject *entry = PyList_GET_ITEM(candidates, c);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            !PyTuple_Check(PyTuple_GET_ITEM(entry, 0)) ||
            PyTuple_GET_SIZE(PyTuple_GET_ITEM(entry, 0)) != count) {
            PyErr_SetString(PyExc_TypeError,
                            "match_line: entries must be (pattern, plan), a pattern a tuple "
                            "of one str or None per word");
            return NULL;
        }
        PyObject *pattern = PyTuple_GET_ITEM(entry, 0);
        int values = 0, k;
        for (k = 0; k < count; k++) {
            PyObject *literal = PyTuple_GET_ITEM(pattern, k);
            if (literal == Py_None) {
                values += k > 1;
                continue;
            }
            if (!PyUnicode_Check(literal) || !word_is(s, &words[k], literal))
                break;
        }
        if (k < count)
            continue;
        PyObject *chain = PyUnicode_Substring(line, words[1].start, words[1].end);
        PyObject *found = PyTuple_New(values);
        if (chain == NULL || found == NULL) {
            Py_XDECREF(chain);
            Py_XDECREF(found);
            return NULL;
        }
        for (int v = 0, w = 2; w < count; w++) {
            if (PyTuple_GET_ITEM(pattern, w) != Py_None)
                continue;
            PyObject *word = PyUnicode_Substring(line, words[w].start, words[w].end);
            if (word == NULL) {
                Py_DECREF(chain);
                Py_DECREF(found);
                return NULL;
            }
            PyTuple_SET_ITEM(found, v++, word);
        }
        PyObject *result = PyTuple_Pack(3, PyTuple_GET_ITEM(entry, 1), chain, found);
        Py_DECREF(chain);
        Py_DECREF(found);
        return result;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(chain_header_doc,
"chain_header(line) -> str | None\n\n"
"NAME, for a user chain header ``:NAME - ...`` written plainly: ASCII, the name (no control\n"
"character in it) right after the colon and a blank after it, then the word ``-``. None for\n"
"any other line.");

static PyObject *chain_header(PyObject *module, PyObject *line) {
    (void)module;
    if (!PyUnicode_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "chain_header(line: str)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(line))
        Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_DATA(line);
    Py_ssize_t n = PyUnicode_GET_LENGTH(line), end = 1;
    if (n < 2 || s[0] != ':')
        Py_RETURN_NONE;
    for (; end < n && !is_blank(s[end]); end++)
        if (s[end] < 0x20)
            Py_RETURN_NONE;
    Py_ssize_t i = end;
    while (i < n && is_blank(s[i]))
        i++;
    if (end == 1 || i == end || i >= n || s[i] != '-' || (i + 1 < n && !is_blank(s[i + 1])))
        Py_RETURN_NONE;
    return PyUnicode_Substring(line, 1, end);
}

static PyMethodDef methods[] = {
    {"match_line", (PyCFunction)(void (*)(void))match_line, METH_FASTCALL, match_line_doc},
    {"chain_header", chain_header, METH_O, chain_header_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "meshlab.netfilter._fastwords",
    .m_doc = "Optional C twins of meshlab.netfilter.shapes.match_line and "
             "meshlab.netfilter.source.chain_header (see there).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastwords(void) { return PyModule_Create(&module); }
