# decl.pxi: C declarations shared by every core component, and forward declarations of
# the cdef classes so that components can reference each other regardless of include order.
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t, uint32_t

cdef extern from "platform.h":
    ctypedef struct pyotp_qnode:
        pyotp_qnode* next
    ctypedef struct pyotp_mpsc:
        pyotp_qnode* head
        pyotp_qnode* tail
        pyotp_qnode stub
    int PYOTP_Q_EMPTY
    int PYOTP_Q_ITEM
    int PYOTP_Q_BUSY
    void pyotp_mpsc_init(pyotp_mpsc* q) nogil
    void pyotp_mpsc_push(pyotp_mpsc* q, pyotp_qnode* n) nogil
    int pyotp_mpsc_pop(pyotp_mpsc* q, pyotp_qnode** out) nogil
    int pyotp_mpsc_nonempty(pyotp_mpsc* q) nogil
    int pyotp_cas_int(long* p, long expected, long desired) nogil
    void pyotp_store_int(long* p, long v) nogil
    long pyotp_load_int(long* p) nogil
    long pyotp_add_int(long* p, long d) nogil
    double pyotp_monotonic_ms() nogil
    int pyotp_timerfd_open() nogil
    int pyotp_timerfd_set(int fd, double at_ms) nogil
    int pyotp_timerfd_close(int fd) nogil
    unsigned long pyotp_thread_id() nogil
    int PYOTP_CAN_SPIN
    int pyotp_spin_readable(int fd, double max_us) nogil
    long pyotp_recv_nb(int fd, char* buf, size_t n) nogil
    long pyotp_send_nb(int fd, const char* buf, size_t n) nogil

cdef extern from "suspend.h":
    ctypedef object (*pyotp_susp_begin_fn)(object s, int op, object a, object b, object c)
    int pyotp_susp_ready() except -1
    object pyotp_susp_new(object token)
    object pyotp_susp_arm(object s, int op, PyObject* a, PyObject* b, PyObject* c)
    bint pyotp_susp_check(object o)
    bint pyotp_susp_armed(object s)
    object pyotp_susp_disarm(object s)
    void pyotp_susp_set(pyotp_susp_begin_fn begin, object names, object waitfn, object readyfn)
    int PYOTP_SUSP_FAST

cdef extern from "Python.h":
    ctypedef enum PySendResult:
        PYGEN_RETURN
        PYGEN_ERROR
        PYGEN_NEXT
    PySendResult PyIter_Send(object iter, object arg, PyObject** presult) except? PYGEN_ERROR
    PyObject* PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames) except NULL

cdef extern from *:
    """
    #if PYOTP_DEBUG
    #define PYOTP_ASSERT(c) do { if (!(c)) { Py_FatalError("pyotp internal check failed: " #c); } } while (0)
    #else
    #define PYOTP_ASSERT(c) ((void)0)
    #endif
    """
    void PYOTP_ASSERT(bint c) nogil

cdef class Pid
cdef class Reference
cdef class Timer
cdef class TimerWheel
cdef class Process
cdef class Scheduler
cdef class GenSpec
cdef class DistChannel
