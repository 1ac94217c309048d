/* CPU-time clocks and timers, POSIX timers and timerfds. Prints only
 * what a program can rely on (counts within ranges, never times): the
 * test compares it with a native run.
 *
 * - ITIMER_VIRTUAL and ITIMER_PROF fire for a loop that spins without
 *   system calls; getitimer counts down CPU time.
 * - CLOCK_PROCESS_CPUTIME_ID / CLOCK_THREAD_CPUTIME_ID (and the clock of
 *   clock_getcpuclockid) advance while spinning, not while sleeping;
 *   getrusage and times agree; a reaped child's time shows as children's.
 * - timer_create: SIGEV_SIGNAL with an interval counts ticks (si_code
 *   SI_TIMER, si_value, sane overruns), TIMER_ABSTIME, SIGEV_NONE with
 *   timer_gettime, SIGEV_THREAD_ID, a CPU-time timer, timer_delete, bad
 *   arguments, not inherited by fork, gone after exec.
 * - timerfd: read counts expirations, poll and epoll see it, nonblocking
 *   reads, timerfd_gettime, TFD_TIMER_ABSTIME.
 * - signalfd: blocked signals (a raised one, SIGCHLD, a timer's with its
 *   code and value) read as records; poll sees them.
 * - sigtimedwait: times out, takes a pending signal, a timer's with its
 *   siginfo; SIGEV_THREAD timers (the C library's thread waits with
 *   sigwaitinfo). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t vt, prof, rt, thr;
static volatile int last_code, last_value, last_overrun, max_overrun;

static void on_vt(int s) { (void)s; vt++; }
static void on_prof(int s) { (void)s; prof++; }
static void on_rt(int s, siginfo_t *si, void *uc) {
    (void)s;
    (void)uc;
    rt++;
    last_code = si->si_code;
    last_value = si->si_value.sival_int;
    last_overrun = si->si_overrun;
    if (si->si_overrun > max_overrun) max_overrun = si->si_overrun;
}
static void on_thr(int s) { (void)s; thr++; }

/* Prints a call's result and whether errno is the one expected (read
 * after the call: arguments are evaluated before `show` runs). */
static void show(const char *what, long r, int want, const char *name) {
    printf("%s: %ld %s\n", what, r, r >= 0 ? "" : errno == want ? name : "other");
}

static long long ns(clockid_t c) {
    struct timespec ts;
    if (clock_gettime(c, &ts)) return -1;
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spins without system calls until `flag` reaches `n` (or a long bound). */
static void spin_until(volatile sig_atomic_t *flag, int n) {
    for (unsigned long i = 0; *flag < n && i < 40000000000UL; i++) __asm__ volatile("" ::: "memory");
}

/* Spins until this thread has used `ms` more of CPU time (bounded by
 * wall-clock time, so a clock that never moves ends it too). */
static void spin_cpu(long ms) {
    long long end = ns(CLOCK_THREAD_CPUTIME_ID) + ms * 1000000LL, wall = ns(CLOCK_MONOTONIC) + 20000000000LL;
    while (ns(CLOCK_THREAD_CPUTIME_ID) < end && ns(CLOCK_MONOTONIC) < wall) {
    }
}

static void handler(int sig, void (*f)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = f;
    sigaction(sig, &sa, 0);
}

static void itimers(void) {
    handler(SIGVTALRM, on_vt);
    handler(SIGPROF, on_prof);
    struct itimerval it = {.it_interval = {0, 10000}, .it_value = {0, 10000}}, got;
    setitimer(ITIMER_VIRTUAL, &it, 0);
    getitimer(ITIMER_VIRTUAL, &got);
    printf("virtual: interval %ld us, armed %d\n", (long)got.it_interval.tv_usec, got.it_value.tv_usec > 0);
    spin_until(&vt, 3);
    struct itimerval off = {0};
    setitimer(ITIMER_VIRTUAL, &off, 0);
    printf("virtual: fired >=3: %d\n", vt >= 3);
    /* A one-shot ITIMER_PROF while spinning. */
    struct itimerval once = {.it_value = {0, 20000}};
    setitimer(ITIMER_PROF, &once, 0);
    spin_until(&prof, 1);
    printf("prof: fired %d\n", prof);
    getitimer(ITIMER_PROF, &got);
    printf("prof: disarmed %d\n", got.it_value.tv_sec == 0 && got.it_value.tv_usec == 0);
    /* A CPU-time timer does not run down while the process sleeps. */
    struct itimerval long_one = {.it_value = {0, 50000}};
    setitimer(ITIMER_VIRTUAL, &long_one, 0);
    int before = vt;
    usleep(120000);
    printf("virtual while sleeping: fired %d\n", vt - before);
    setitimer(ITIMER_VIRTUAL, &off, 0);
    show("bad which", setitimer(7, &it, 0), EINVAL, "EINVAL");
}

static void cpu_clocks(void) {
    long long p0 = ns(CLOCK_PROCESS_CPUTIME_ID), t0 = ns(CLOCK_THREAD_CPUTIME_ID), m0 = ns(CLOCK_MONOTONIC);
    spin_cpu(50);
    /* Read in the reverse order: the process's interval holds the thread's. */
    long long t1 = ns(CLOCK_THREAD_CPUTIME_ID), p1 = ns(CLOCK_PROCESS_CPUTIME_ID), m1 = ns(CLOCK_MONOTONIC);
    printf("spinning 50ms of CPU: process >= thread %d, wall >= CPU %d\n", p1 - p0 >= t1 - t0,
           m1 - m0 + 1000000 >= t1 - t0);
    usleep(100000);
    long long p2 = ns(CLOCK_PROCESS_CPUTIME_ID);
    printf("sleeping 100ms: process +<30ms %d\n", p2 - p1 < 30000000);
    clockid_t mine;
    int r = clock_getcpuclockid(0, &mine);
    long long via = ns(mine);
    printf("clock_getcpuclockid: %d, close %d\n", r, via >= p2 && via - p2 < 30000000);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long ru_ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL
                      + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    printf("getrusage: >=40ms %d, <=clock %d\n", ru_ns >= 40000000, ru_ns <= ns(CLOCK_PROCESS_CPUTIME_ID) + 1000000);
    struct tms tm;
    times(&tm);
    printf("times: utime+stime >= 4 ticks %d\n", tm.tms_utime + tm.tms_stime >= 4);
    pid_t c = fork();
    if (c == 0) {
        spin_cpu(50);
        _exit(0);
    }
    waitpid(c, 0, 0);
    getrusage(RUSAGE_CHILDREN, &ru);
    long long ch = ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000LL
                   + ru.ru_stime.tv_usec;
    printf("children: >=50ms %d\n", ch >= 50000);
    show("bad clock", clock_gettime((clockid_t)12345, &(struct timespec){0}), EINVAL, "EINVAL");
}

static timer_t make(clockid_t clock, int notify, int sig, int value) {
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = notify;
    sev.sigev_signo = sig;
    sev.sigev_value.sival_int = value;
    timer_t t;
    if (timer_create(clock, &sev, &t)) {
        printf("timer_create: errno %d\n", errno);
        exit(1);
    }
    return t;
}

static void set(timer_t t, int flags, long long value_ns, long long interval_ns) {
    struct itimerspec its = {{interval_ns / 1000000000, interval_ns % 1000000000},
                             {value_ns / 1000000000, value_ns % 1000000000}};
    if (timer_settime(t, flags, &its, 0)) printf("timer_settime: errno %d\n", errno);
}

/* A one-shot 20 ms timer on a CPU clock, spun for. */
static void cpu_timer(const char *what, clockid_t clock, int value) {
    timer_t t = make(clock, SIGEV_SIGNAL, SIGRTMIN, value);
    int before = rt;
    set(t, 0, 20000000, 0);
    spin_until(&rt, before + 1);
    printf("%s: fired %d, value %d\n", what, rt - before, last_value);
    timer_delete(t);
}

static void posix_timers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN, &sa, 0);

    /* An interval timer counts ticks; each signal says who sent it. */
    timer_t t = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN, 42);
    set(t, 0, 5000000, 5000000);
    while (rt < 5) pause();
    struct itimerspec cur, old;
    timer_gettime(t, &cur);
    printf("interval: ticks>=5 %d, code SI_TIMER %d, value %d, interval %ld ns\n", rt >= 5, last_code == SI_TIMER,
           last_value, cur.it_interval.tv_nsec);
    /* Blocked for a while, the ticks pile up as overruns of one signal. */
    sigset_t block, prev;
    sigemptyset(&block);
    sigaddset(&block, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &block, &prev);
    int before = rt;
    usleep(60000);
    sigprocmask(SIG_SETMASK, &prev, 0);
    /* (The timer runs on: one more tick may come in between.) */
    int seen = last_overrun, ov = timer_getoverrun(t), seen2 = last_overrun, after = rt - before;
    printf("blocked 60ms: coalesced %d, overrun >= 3 %d, getoverrun is the last one's %d\n", after >= 1 && after <= 2,
           max_overrun >= 3 && max_overrun < 10000, ov == seen || ov == seen2);
    struct itimerspec stop = {0};
    timer_settime(t, 0, &stop, &old);
    printf("stopped: old interval %ld ns, old value>0 %d\n", old.it_interval.tv_nsec,
           old.it_value.tv_sec > 0 || old.it_value.tv_nsec > 0);
    timer_delete(t);
    show("after delete", timer_gettime(t, &cur), EINVAL, "EINVAL");

    /* TIMER_ABSTIME on CLOCK_REALTIME: 30 ms from now. */
    t = make(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN, 7);
    before = rt;
    set(t, TIMER_ABSTIME, ns(CLOCK_REALTIME) + 30000000, 0);
    while (rt == before) pause();
    timer_gettime(t, &cur);
    printf("abstime: fired %d, value %d, disarmed %d\n", rt - before, last_value,
           cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0);
    /* An absolute time already past fires at once. */
    before = rt;
    set(t, TIMER_ABSTIME, 1, 0);
    while (rt == before) pause();
    printf("abstime in the past: fired %d\n", rt - before);
    timer_delete(t);

    /* SIGEV_NONE: no signal, but timer_gettime counts down. */
    t = make(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
    set(t, 0, 10000000000LL, 0);
    timer_gettime(t, &cur);
    printf("none: left in (9s,10s] %d\n", cur.it_value.tv_sec == 9 || (cur.it_value.tv_sec == 10 && cur.it_value.tv_nsec == 0));
    timer_delete(t);

    /* SIGEV_THREAD_ID to this thread. */
    handler(SIGUSR1, on_thr);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGUSR1;
    sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &sev, &t)) printf("thread_id: errno %d\n", errno);
    set(t, 0, 10000000, 0);
    while (!thr) pause();
    printf("thread_id: fired %d\n", thr);
    timer_delete(t);

    /* A CPU-time timer fires for a spinning loop. */
    cpu_timer("cpu timer", CLOCK_PROCESS_CPUTIME_ID, 9);
    cpu_timer("thread cpu timer", CLOCK_THREAD_CPUTIME_ID, 10);

    /* Bad arguments. */
    show("bad timer clock", timer_create((clockid_t)12345, 0, &t), EINVAL, "EINVAL");
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = 0;
    show("bad signal", timer_create(CLOCK_MONOTONIC, &sev, &t), EINVAL, "EINVAL");
    t = make(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
    struct itimerspec bad = {{0, 0}, {0, 1000000000}};
    show("bad nsec", timer_settime(t, 0, &bad, 0), EINVAL, "EINVAL");

    /* Not inherited by fork; gone after exec. */
    pid_t c = fork();
    if (c == 0) {
        show("child: gettime", timer_gettime(t, &cur), EINVAL, "EINVAL");
        fflush(stdout);
        _exit(0);
    }
    waitpid(c, 0, 0);
    timer_delete(t);
}

static void timerfds(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {{0, 10000000}, {0, 10000000}}, cur;
    timerfd_settime(fd, 0, &its, 0);
    uint64_t n = 0;
    long r = read(fd, &n, sizeof n);
    printf("timerfd read: %ld, n>=1 %d\n", r, n >= 1);
    usleep(55000);
    r = read(fd, &n, sizeof n);
    printf("timerfd after 55ms: n >= 3 %d\n", n >= 3);
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, 1000);
    printf("timerfd poll: %d revents %d\n", pr, p.revents);
    read(fd, &n, sizeof n);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 77}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    int er = epoll_wait(ep, &out, 1, 1000);
    printf("timerfd epoll: %d data %u\n", er, out.data.u32);
    timerfd_gettime(fd, &cur);
    printf("timerfd gettime: interval %ld ns, armed %d\n", cur.it_interval.tv_nsec,
           cur.it_value.tv_sec > 0 || cur.it_value.tv_nsec > 0);
    struct itimerspec off = {0};
    timerfd_settime(fd, 0, &off, 0);
    close(ep);
    close(fd);

    fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    show("nonblocking unarmed", read(fd, &n, sizeof n), EAGAIN, "EAGAIN");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct itimerspec abs = {{0, 0}, {now.tv_sec, now.tv_nsec}};
    abs.it_value.tv_nsec += 20000000;
    if (abs.it_value.tv_nsec >= 1000000000) {
        abs.it_value.tv_sec++;
        abs.it_value.tv_nsec -= 1000000000;
    }
    timerfd_settime(fd, TFD_TIMER_ABSTIME, &abs, 0);
    pr = poll(&(struct pollfd){fd, POLLIN, 0}, 1, 2000);
    r = read(fd, &n, sizeof n);
    printf("abstime: poll %d read %ld n %llu\n", pr, r, (unsigned long long)n);
    show("short read", read(fd, &n, 4), EINVAL, "EINVAL");
    close(fd);
    show("timerfd bad clock", timerfd_create(CLOCK_PROCESS_CPUTIME_ID, 0), EINVAL, "EINVAL");
    show("timerfd bad flags", timerfd_create(CLOCK_MONOTONIC, 0x12345), EINVAL, "EINVAL");
}

static void signalfds(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGRTMIN + 1);
    sigprocmask(SIG_BLOCK, &mask, 0);
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    struct signalfd_siginfo si;
    show("signalfd empty", read(fd, &si, sizeof si), EAGAIN, "EAGAIN");
    raise(SIGUSR2);
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, 1000);
    long r = read(fd, &si, sizeof si);
    printf("signalfd: poll %d read %ld signo %u\n", pr, r, si.ssi_signo);
    pid_t c = fork();
    if (c == 0) _exit(3);
    pr = poll(&p, 1, 5000);
    r = read(fd, &si, sizeof si);
    printf("signalfd SIGCHLD: poll %d read %ld signo %u\n", pr, r, si.ssi_signo);
    waitpid(c, 0, 0);
    timer_t t = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 1, 55);
    set(t, 0, 10000000, 0);
    pr = poll(&p, 1, 5000);
    r = read(fd, &si, sizeof si);
    printf("signalfd timer: poll %d read %ld signo-rtmin %d code SI_TIMER %d int %d\n", pr, r,
           (int)si.ssi_signo - SIGRTMIN, si.ssi_code == SI_TIMER, si.ssi_int);
    timer_delete(t);
    show("short read", read(fd, &si, 8), EINVAL, "EINVAL");
    sigset_t other;
    sigemptyset(&other);
    sigaddset(&other, SIGUSR1);
    printf("new set: %d\n", signalfd(fd, &other, 0) == fd);
    show("bad size", syscall(SYS_signalfd4, -1, &mask, 4, 0), EINVAL, "EINVAL");
    close(fd);
    sigprocmask(SIG_UNBLOCK, &mask, 0);
}

static volatile int thread_ticks;
static void on_tick(union sigval v) { thread_ticks += v.sival_int; }

static void sigwaits(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &mask, 0);
    siginfo_t si;
    struct timespec ts = {0, 20000000};
    show("sigtimedwait nothing", sigtimedwait(&mask, &si, &ts), EAGAIN, "EAGAIN");
    raise(SIGUSR2);
    int r = sigtimedwait(&mask, &si, &ts);
    printf("sigtimedwait pending: %d signo %d\n", r, si.si_signo);
    timer_t t = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 2, 66);
    set(t, 0, 10000000, 0);
    r = sigwaitinfo(&mask, &si);
    printf("sigwaitinfo timer: rtmin+%d code SI_TIMER %d value %d\n", r - SIGRTMIN, si.si_code == SI_TIMER,
           si.si_value.sival_int);
    timer_delete(t);
    sigprocmask(SIG_UNBLOCK, &mask, 0);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = on_tick;
    sev.sigev_value.sival_int = 1;
    if (timer_create(CLOCK_MONOTONIC, &sev, &t)) printf("SIGEV_THREAD: errno %d\n", errno);
    set(t, 0, 5000000, 5000000);
    for (int i = 0; i < 5000 && thread_ticks < 3; i++) usleep(1000);
    timer_delete(t);
    printf("SIGEV_THREAD: ticks>=3 %d\n", thread_ticks >= 3);
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc > 2 && !strcmp(argv[1], "after-exec")) {
        struct itimerspec cur;
        show("after exec: the timer", timer_gettime((timer_t)(intptr_t)atoi(argv[2]), &cur), EINVAL, "EINVAL");
        return 0;
    }
    itimers();
    cpu_clocks();
    posix_timers();
    timerfds();
    signalfds();
    sigwaits();
    /* POSIX timers end at exec. */
    timer_t t = make(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
    char id[24];
    snprintf(id, sizeof id, "%ld", (long)(intptr_t)t);
    struct itimerspec cur;
    show("before exec: the timer", timer_gettime(t, &cur), 0, "");
    execl("/proc/self/exe", argv[0], "after-exec", id, (char *)0);
    printf("exec failed: %d\n", errno);
    return 1;
}
