/* suspend.h: the awaitable that the waiting API (receive, GenServer.call, sleep) hands a
 * coroutine process, and what makes a forgotten `await` on it loud.
 *
 * Owns: one reusable object per process (Process.susp) instead of a new generator per
 * wait. The API call only *arms* it with its operation and arguments; nothing happens
 * until it is awaited: `await s` goes through the type's am_send (CPython >= 3.10's
 * PyIter_Send), whose first send runs the operation (pyotp_susp_begin: pops the message,
 * sends the request, starts the timer) and then either returns its value at once or
 * yields the scheduler's token (the process is now suspended); the next send returns the
 * value the scheduler resumes it with. No allocation per wait.
 * An armed object that was never awaited is reported, as CPython reports a coroutine
 * never awaited ("RuntimeWarning: GenServer.call(...) was never awaited"): when the
 * process arms it again, when the process's step ends (it suspends elsewhere, returns or
 * fails) with it still armed (scheduler.pyx), and when it is deallocated armed.
 * Invariants:
 *  - state: IDLE (awaited to the end, or never handed out) -> ARMED (handed out, holds the
 *    arguments) -> WAITING (operation started, token yielded) -> IDLE. A wait that ends by
 *    a throw (timeout, cancel, exit) leaves it WAITING: the next arm resets it. throw() and
 *    close() find no such methods on it, so CPython throws into the awaiting coroutine
 *    itself, as for any plain iterator.
 *  - The arguments are held only while ARMED (NULL stands for None): begin takes them
 *    over, so a request object is not kept alive by a process that later waits elsewhere.
 *  - Only the loop thread touches it (with the GIL).
 */
#ifndef PYOTP_SUSPEND_H
#define PYOTP_SUSPEND_H
#include <Python.h>

/* 3.10 and 3.11 resume an awaited iterator through am_send (PyIter_Send); 3.12+ call its
 * tp_iternext/.send() (a method call and a StopIteration per resume: measured 28 % slower
 * on ring_receive), and inline only native generators. So there `await s` (am_await) runs
 * the operation at once and hands CPython a plain Python generator that yields the token
 * (pyotp_susp_waitfn) or, when the value is ready, one that returns it (readyfn); s itself
 * is IDLE again. Awaited any other way (iter(s), .send()), s works as below. */
#if PY_VERSION_HEX >= 0x030C0000
#define PYOTP_SUSP_FAST 0
#else
#define PYOTP_SUSP_FAST 1
#endif

#define PYOTP_SUSP_IDLE 0
#define PYOTP_SUSP_ARMED 1
#define PYOTP_SUSP_WAITING 2

typedef struct {
    PyObject_HEAD
    PyObject *token;      /* what the first send yields (borrowed from the module: lives as long) */
    int state;
    int op;               /* which API armed it (the core's OP_* numbers) */
    PyObject *a, *b, *c;  /* its arguments, owned while ARMED; NULL: None */
} pyotp_susp;

/* Runs the armed operation: returns the token (the process now waits), a value (ready at
 * once) or NULL with an exception. Set by the core at import (deferred.pyx). */
typedef PyObject *(*pyotp_susp_begin_fn)(PyObject *s, int op, PyObject *a, PyObject *b, PyObject *c);
static pyotp_susp_begin_fn pyotp_susp_begin = NULL;
/* The API name of each op, for the warning (set by the core: a tuple of str). */
static PyObject *pyotp_susp_names = NULL;

/* 3.12+: the generator functions that am_await hands out (set by the core: deferred.pyx). */
static PyObject *pyotp_susp_waitfn = NULL;
static PyObject *pyotp_susp_readyfn = NULL;

static void pyotp_susp_set(pyotp_susp_begin_fn begin, PyObject *names, PyObject *waitfn,
                           PyObject *readyfn) {
    pyotp_susp_begin = begin;
    Py_XINCREF(names);
    Py_XSETREF(pyotp_susp_names, names);
    Py_XINCREF(waitfn);
    Py_XSETREF(pyotp_susp_waitfn, waitfn);
    Py_XINCREF(readyfn);
    Py_XSETREF(pyotp_susp_readyfn, readyfn);
}

static PySendResult pyotp_susp_send(PyObject *self, PyObject *arg, PyObject **result) {
    pyotp_susp *s = (pyotp_susp *)self;
    if (s->state == PYOTP_SUSP_WAITING) {
        s->state = PYOTP_SUSP_IDLE;
        Py_INCREF(arg);
        *result = arg;
        return PYGEN_RETURN;
    }
    if (s->state == PYOTP_SUSP_ARMED) {
        PyObject *a = s->a, *b = s->b, *c = s->c, *r;
        s->a = s->b = s->c = NULL;
        s->state = PYOTP_SUSP_WAITING;
        r = pyotp_susp_begin(self, s->op, a ? a : Py_None, b ? b : Py_None, c ? c : Py_None);
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        if (r == NULL) {
            s->state = PYOTP_SUSP_IDLE;
            *result = NULL;
            return PYGEN_ERROR;
        }
        *result = r;
        if (r == s->token)
            return PYGEN_NEXT;
        s->state = PYOTP_SUSP_IDLE;
        return PYGEN_RETURN;
    }
    PyErr_SetString(PyExc_RuntimeError,
                    "this pyotp awaitable was already awaited (receive(), GenServer.call() "
                    "and sleep() give one awaitable per call: await it once, right away)");
    *result = NULL;
    return PYGEN_ERROR;
}

static PyObject *pyotp_susp_await(PyObject *self) {
#if !PYOTP_SUSP_FAST
    pyotp_susp *s = (pyotp_susp *)self;
    if (s->state == PYOTP_SUSP_ARMED && pyotp_susp_waitfn != NULL && pyotp_susp_readyfn != NULL) {
        PyObject *res = NULL, *g;
        PySendResult r = pyotp_susp_send(self, Py_None, &res);
        if (r == PYGEN_ERROR)
            return NULL;
        if (r == PYGEN_NEXT) {          /* res is the token: the process now waits */
            s->state = PYOTP_SUSP_IDLE;
            g = PyObject_CallOneArg(pyotp_susp_waitfn, res);
        } else {
            g = PyObject_CallOneArg(pyotp_susp_readyfn, res);
        }
        Py_DECREF(res);
        return g;
    }
#endif
    Py_INCREF(self);
    return self;
}

/* .send(value): what CPython calls instead of am_send when a tracer is set (3.10, 3.11)
 * and always from 3.12 on. */
static PyObject *pyotp_susp_send_meth(PyObject *self, PyObject *arg) {
    PyObject *res = NULL;
    PySendResult r = pyotp_susp_send(self, arg, &res);
    if (r == PYGEN_NEXT)
        return res;
    if (r == PYGEN_ERROR)
        return NULL;
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

/* The API name of what s was armed with ("GenServer.call(...)"), a new reference. */
static PyObject *pyotp_susp_name(pyotp_susp *s) {
    if (pyotp_susp_names != NULL && s->op >= 0 && s->op < PyTuple_GET_SIZE(pyotp_susp_names)) {
        PyObject *n = PyTuple_GET_ITEM(pyotp_susp_names, s->op);
        Py_INCREF(n);
        return n;
    }
    return PyUnicode_FromString("a pyotp wait");
}

/* Back to IDLE without running the operation; returns the API name it was armed with (a
 * new reference), for the warning. */
static PyObject *pyotp_susp_disarm(PyObject *self) {
    pyotp_susp *s = (pyotp_susp *)self;
    s->state = PYOTP_SUSP_IDLE;
    Py_CLEAR(s->a);
    Py_CLEAR(s->b);
    Py_CLEAR(s->c);
    return pyotp_susp_name(s);
}

static void pyotp_susp_dealloc(PyObject *self) {
    pyotp_susp *s = (pyotp_susp *)self;
    if (s->state == PYOTP_SUSP_ARMED) {
        /* as CPython's _PyErr_WarnUnawaitedCoroutine: keep the current exception */
        PyObject *et, *ev, *tb, *name;
        PyErr_Fetch(&et, &ev, &tb);
        name = pyotp_susp_disarm(self);
        if (name == NULL ||
                PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "%U was never awaited", name) < 0)
            PyErr_WriteUnraisable(self);
        Py_XDECREF(name);
        PyErr_Restore(et, ev, tb);
    }
    Py_CLEAR(s->a);
    Py_CLEAR(s->b);
    Py_CLEAR(s->c);
    PyObject_Free(self);
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

static PyObject *pyotp_susp_repr(PyObject *self) {
    pyotp_susp *s = (pyotp_susp *)self;
    PyObject *name = pyotp_susp_name(s), *r;
    if (name == NULL)
        return NULL;
    r = PyUnicode_FromFormat(s->state == PYOTP_SUSP_ARMED ? "<awaitable %U, not awaited yet>"
                             : "<awaitable %U>", name);
    Py_DECREF(name);
    return r;
}

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
    pyotp_susp_type.tp_dealloc = pyotp_susp_dealloc;
    pyotp_susp_type.tp_repr = pyotp_susp_repr;
    pyotp_susp_type.tp_doc = "The awaitable of receive(), GenServer.call() and sleep() "
                             "(internal): nothing happens until it is awaited.";
    return PyType_Ready(&pyotp_susp_type);
}

static PyObject *pyotp_susp_new(PyObject *token) {
    pyotp_susp *s = PyObject_New(pyotp_susp, &pyotp_susp_type);
    if (s == NULL)
        return NULL;
    s->token = token;
    s->state = PYOTP_SUSP_IDLE;
    s->op = 0;
    s->a = s->b = s->c = NULL;
    return (PyObject *)s;
}

static inline int pyotp_susp_check(PyObject *o) {
    return Py_TYPE(o) == &pyotp_susp_type;
}

static inline int pyotp_susp_armed(PyObject *s) {
    return ((pyotp_susp *)s)->state == PYOTP_SUSP_ARMED;
}

/* Hand s out for op(a, b, c) (NULL: None, as for the common receive() without arguments:
 * nothing to count). s is IDLE or WAITING here (the caller has warned about one still
 * ARMED), so its argument slots are empty. */
static inline PyObject *pyotp_susp_arm(PyObject *self, int op, PyObject *a, PyObject *b, PyObject *c) {
    pyotp_susp *s = (pyotp_susp *)self;
    s->state = PYOTP_SUSP_ARMED;
    s->op = op;
    Py_XINCREF(a);
    Py_XINCREF(b);
    Py_XINCREF(c);
    s->a = a;
    s->b = b;
    s->c = c;
    Py_INCREF(self);
    return self;
}
#endif
