/* Robust mutexes: a thread or process that dies holding one leaves it to
   the next locker with EOWNERDEAD (the kernel walks the dead thread's
   robust list, set_robust_list), also to a locker already waiting, and
   across processes for one in shared memory, and from a process that
   execs another program (its old memory's robust list goes with it);
   made consistent, it works on. get_robust_list reports the list's
   head. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t local;

static void init(pthread_mutex_t *m, int pshared) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (pshared) pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(m, &a);
}

static const char *name(int r) {
    return r == 0 ? "0" : r == EOWNERDEAD ? "EOWNERDEAD" : r == ENOTRECOVERABLE ? "ENOTRECOVERABLE" : strerror(r);
}

static void *take_and_leave(void *arg) {
    pthread_mutex_lock(arg);
    return 0;
}

static void recover(const char *what, pthread_mutex_t *m) {
    int r = pthread_mutex_lock(m);
    int c = r == EOWNERDEAD ? pthread_mutex_consistent(m) : -1;
    pthread_mutex_unlock(m);
    int again = pthread_mutex_lock(m);
    pthread_mutex_unlock(m);
    printf("%s: lock %s, consistent %d, again %s\n", what, name(r), c, name(again));
}

int main(int argc, char **argv) {
    if (argc > 1) {
        /* The program a holder execs: it lives on a little. */
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, 0);
        return 0;
    }
    /* A thread exits holding it. */
    init(&local, 0);
    pthread_t t;
    pthread_create(&t, 0, take_and_leave, &local);
    pthread_join(t, 0);
    recover("thread died holding it", &local);

    /* A process dies holding one in shared memory. */
    pthread_mutex_t *shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    init(shared, 1);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(shared);
        _exit(0);
    }
    waitpid(pid, 0, 0);
    recover("process died holding it", shared);

    /* A locker already waiting when the holder dies. */
    int p[2];
    if (pipe(p) < 0) return 1;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(shared);
        if (write(p[1], "x", 1) != 1) _exit(2);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, 0);
        _exit(0);
    }
    char c;
    if (read(p[0], &c, 1) != 1) return 1;
    recover("waiting when it died", shared);
    waitpid(pid, 0, 0);

    /* A holder that execs another program. */
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(shared);
        if (write(p[1], "x", 1) != 1) _exit(2);
        execl("/proc/self/exe", "robust_mutex", "exec", (char *)0);
        _exit(3);
    }
    if (read(p[0], &c, 1) != 1) return 1;
    recover("its holder exec'd", shared);
    waitpid(pid, 0, 0);

    /* Left inconsistent, it is not recoverable. */
    pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(shared);
        _exit(0);
    }
    waitpid(pid, 0, 0);
    int r = pthread_mutex_lock(shared);
    pthread_mutex_unlock(shared);
    int after = pthread_mutex_lock(shared);
    printf("not made consistent: %s, then %s\n", name(r), name(after));

    /* The list's head, as set. */
    void *head = 0;
    size_t len = 0;
    long g = syscall(SYS_get_robust_list, 0, &head, &len);
    printf("get_robust_list: %ld, head %s, len %zu\n", g, head ? "set" : "none", len);
    return 0;
}
