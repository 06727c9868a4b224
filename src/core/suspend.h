/* suspend.h: the awaitable a coroutine process gets from a receive() that has to wait.
 *
 * Owns: one reusable object per process (Process.susp) instead of a new generator per
 * wait. `await s` goes through the type's am_send (CPython >= 3.10's PyIter_Send): the
 * first send yields the scheduler's token (the process is now suspended), the next one
 * returns the value the scheduler resumes it with (the message). No allocation per wait.
 * Invariants:
 *  - pyotp_susp_arm() puts it back to "not yet yielded" each time receive() hands it out;
 *    a wait that ends by a throw (timeout, cancel, exit) leaves it armed-and-yielded, and
 *    the next arm resets it. throw()/close() find no such methods on it, so CPython throws
 *    into the awaiting coroutine itself, as for any plain iterator.
 *  - Only the loop thread touches it (with the GIL).
 */
#ifndef PYOTP_SUSPEND_H
#define PYOTP_SUSPEND_H
#include <Python.h>

/* 3.10 and 3.11 resume an awaited iterator through am_send (PyIter_Send); 3.12+ call its
 * .send() method, slower than a generator: there receive() keeps the generator. */
#if PY_VERSION_HEX >= 0x030C0000
#define PYOTP_SUSP_FAST 0
#else
#define PYOTP_SUSP_FAST 1
#endif

typedef struct {
    PyObject_HEAD
    PyObject *token;      /* what the first send yields (borrowed from the module: lives as long) */
    int yielded;
} pyotp_susp;

static PySendResult pyotp_susp_send(PyObject *self, PyObject *arg, PyObject **result) {
    pyotp_susp *s = (pyotp_susp *)self;
    if (!s->yielded) {
        s->yielded = 1;
        Py_INCREF(s->token);
        *result = s->token;
        return PYGEN_NEXT;
    }
    s->yielded = 0;
    Py_INCREF(arg);
    *result = arg;
    return PYGEN_RETURN;
}

static PyObject *pyotp_susp_await(PyObject *self) {
    Py_INCREF(self);
    return self;
}

/* .send(value): what CPython calls instead of am_send when a tracer is set (3.10, 3.11)
 * and always from 3.12 on (where the fast path is therefore not used, see
 * PYOTP_SUSP_FAST). */
static PyObject *pyotp_susp_send_meth(PyObject *self, PyObject *arg) {
    PyObject *res = NULL;
    PySendResult r = pyotp_susp_send(self, arg, &res);
    if (r == PYGEN_NEXT)
        return res;
    {
        PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, res);
        Py_DECREF(res);
        if (exc != NULL) {
            PyErr_SetObject(PyExc_StopIteration, exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

static PyObject *pyotp_susp_next(PyObject *self) {
    return pyotp_susp_send_meth(self, Py_None);
}

static PyMethodDef pyotp_susp_methods[] = {
    {"send", (PyCFunction)pyotp_susp_send_meth, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

static PyAsyncMethods pyotp_susp_async = {
    pyotp_susp_await,   /* am_await */
    0,                  /* am_aiter */
    0,                  /* am_anext */
    pyotp_susp_send,    /* am_send */
};

static PyTypeObject pyotp_susp_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    "pyotp._core._Suspend",     /* tp_name */
    sizeof(pyotp_susp),         /* tp_basicsize */
};

static int pyotp_susp_ready(void) {
    pyotp_susp_type.tp_flags = Py_TPFLAGS_DEFAULT;
    pyotp_susp_type.tp_as_async = &pyotp_susp_async;
    pyotp_susp_type.tp_iter = PyObject_SelfIter;
    pyotp_susp_type.tp_iternext = pyotp_susp_next;
    pyotp_susp_type.tp_methods = pyotp_susp_methods;
    pyotp_susp_type.tp_dealloc = (destructor)PyObject_Free;
    pyotp_susp_type.tp_doc = "The awaitable of a waiting receive() (internal).";
    return PyType_Ready(&pyotp_susp_type);
}

static PyObject *pyotp_susp_new(PyObject *token) {
    pyotp_susp *s = PyObject_New(pyotp_susp, &pyotp_susp_type);
    if (s == NULL)
        return NULL;
    s->token = token;
    s->yielded = 0;
    return (PyObject *)s;
}

static inline int pyotp_susp_check(PyObject *o) {
    return Py_TYPE(o) == &pyotp_susp_type;
}

static inline PyObject *pyotp_susp_arm(PyObject *s) {
    ((pyotp_susp *)s)->yielded = 0;
    Py_INCREF(s);
    return s;
}
#endif
