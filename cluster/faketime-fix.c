/*
 * faketime-fix — preloaded ahead of libfaketime by cluster/ (`start-node I --faketime SPEC`).
 *
 * With FAKETIME_DONT_FAKE_MONOTONIC=1 only the wall clock should be faked: machines' wall clocks
 * skew and drift, their monotonic clocks do not. libfaketime 0.9.10 still rewrites two kinds of
 * monotonic wait as if they were wall-clock ones, which no real machine does:
 *
 *   - timerfd_settime(): every absolute deadline is rescaled ("only CLOCK_REALTIME is handled").
 *     libdispatch arms its timers (Swift's Task.sleep) on CLOCK_MONOTONIC timerfds: with an offset
 *     every sleep returns at once (the node busy-loops), with a rate (`x10`) a sleep of 10 ms
 *     becomes decades and the node hangs at start.
 *   - pthread_cond_timedwait() on a condition variable set to CLOCK_MONOTONIC returns ETIMEDOUT at
 *     once (the connection threads' deadline waits spin).
 *
 * This library keeps both on the real monotonic clock and passes everything else on to
 * libfaketime. Built by cluster/lib.sh with `cc -shared -fPIC` (gcc or the toolchain's clang).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FDS = 65536 };
/* The clock of each timerfd, + 1 (0: unknown). Written at creation; a reused descriptor is
 * overwritten by its new timerfd_create before any timerfd_settime on it. */
static unsigned char timer_clock[MAX_FDS];

int timerfd_create(int clockid, int flags) {
    int fd = (int)syscall(SYS_timerfd_create, clockid, flags);
    if (fd >= 0 && fd < MAX_FDS) timer_clock[fd] = (unsigned char)(clockid + 1);
    return fd;
}

int timerfd_settime(int fd, int flags, const struct itimerspec *value, struct itimerspec *old) {
    if (fd >= 0 && fd < MAX_FDS && timer_clock[fd] != 0) {
        int clock = timer_clock[fd] - 1;
        if (clock != CLOCK_REALTIME && clock != CLOCK_REALTIME_ALARM)
            return (int)syscall(SYS_timerfd_settime, fd, flags, value, old); /* real, untouched */
    }
    static int (*faked)(int, int, const struct itimerspec *, struct itimerspec *);
    if (!faked) faked = (int (*)(int, int, const struct itimerspec *, struct itimerspec *))dlsym(RTLD_NEXT, "timerfd_settime");
    return faked(fd, flags, value, old);
}

/* glibc ≥ 2.25 keeps a condition variable's clock in bit 1 of __wrefs (1 = CLOCK_MONOTONIC).
 * pthread_cond_clockwait (glibc 2.30) is not wrapped by libfaketime: it waits on the real clock. */
int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *deadline) {
    if ((cond->__data.__wrefs >> 1) & 1) return pthread_cond_clockwait(cond, mutex, CLOCK_MONOTONIC, deadline);
    static int (*faked)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (!faked) faked = (int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *))dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    if (!faked) faked = (int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *))dlsym(RTLD_NEXT, "pthread_cond_timedwait");
    if (!faked) abort();
    return faked(cond, mutex, deadline);
}
