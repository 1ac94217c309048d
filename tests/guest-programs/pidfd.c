/* pidfds as Linux has them: pidfd_open of a live process, a zombie, the
   caller itself, a missing pid (ESRCH) or a thread that does not lead its
   process (EINVAL); poll readable once the process exits;
   pidfd_send_signal (0 to ask, a signal, an unknown flag EINVAL, ESRCH
   once reaped, to the leader thread with PIDFD_SIGNAL_THREAD); waitid(P_PIDFD); clone's CLONE_PIDFD; read is EINVAL and the
   descriptor is close-on-exec. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define P_PIDFD_ 3
#define CLONE_PIDFD_ 0x1000

static long pidfd_open(int pid, unsigned flags) { return syscall(434, pid, flags); }
static long pidfd_send(int fd, int sig, unsigned flags) { return syscall(424, fd, sig, 0, flags); }

static const char *e(long r) {
    if (r >= 0) return "ok";
    return errno == EINVAL ? "EINVAL" : errno == ESRCH ? "ESRCH" : errno == EBADF ? "EBADF" : strerror(errno);
}

static int readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static volatile long thread_tid;
static void *thread(void *arg) {
    (void)arg;
    thread_tid = syscall(SYS_gettid);
    pause();
    return 0;
}

int main(void) {
    /* A live child, signalled through its pidfd. */
    int pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    int fd = pidfd_open(pid, 0);
    /* (One call a line: C leaves the order of arguments open.) */
    printf("open a live child: %s; ", e(fd));
    printf("readable %d\n", readable(fd, 0));
    printf("close-on-exec %d; ", !!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    printf("read: %s\n", e(read(fd, (char[8]){0}, 8)));
    printf("send 0: %s; ", e(pidfd_send(fd, 0, 0)));
    printf("bad flags: %s\n", e(pidfd_send(fd, SIGTERM, 8)));
    printf("send SIGTERM: %s; ", e(pidfd_send(fd, SIGTERM, 0)));
    printf("readable once it died %d\n", readable(fd, 5000));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    long w = waitid(P_PIDFD_, fd, &si, WEXITED);
    printf("waitid(P_PIDFD): %s, the child %d, code %s, signal %d\n", e(w), si.si_pid == pid,
           si.si_code == CLD_KILLED ? "CLD_KILLED" : "other", si.si_status);
    printf("send after the reap: %s\n", e(pidfd_send(fd, 0, 0)));
    close(fd);

    /* PIDFD_SIGNAL_THREAD: the leader thread of the process named. */
    pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    fd = pidfd_open(pid, 0);
    printf("send SIGKILL to its thread: %s; ", e(pidfd_send(fd, SIGKILL, 1)));
    printf("readable %d\n", readable(fd, 5000));
    memset(&si, 0, sizeof si);
    waitid(P_PIDFD_, fd, &si, WEXITED);
    printf("its signal %d\n", si.si_status);
    close(fd);

    /* A zombie, waited for without being reaped. */
    pid = fork();
    if (pid == 0) _exit(3);
    waitid(P_PID, pid, &si, WEXITED | WNOWAIT);
    fd = pidfd_open(pid, 0);
    printf("open a zombie: %s; ", e(fd));
    printf("readable %d; ", readable(fd, 0));
    printf("send 0: %s\n", e(pidfd_send(fd, 0, 0)));
    memset(&si, 0, sizeof si);
    waitid(P_PIDFD_, fd, &si, WEXITED);
    printf("its status %d\n", si.si_status);
    close(fd);

    /* Oneself, nobody, a thread, bad flags. */
    fd = pidfd_open(getpid(), 0);
    printf("open oneself: %s; ", e(fd));
    printf("readable %d\n", readable(fd, 0));
    close(fd);
    printf("open pid 4000000: %s; ", e(pidfd_open(4000000, 0)));
    printf("bad flags: %s\n", e(pidfd_open(getpid(), 1)));
    pthread_t t;
    pthread_create(&t, 0, thread, 0);
    while (!thread_tid) sched_yield();
    printf("open a thread: %s\n", e(pidfd_open(thread_tid, 0)));
    printf("waitid(P_PIDFD) on stdin: %s\n", e(waitid(P_PIDFD_, 0, &si, WEXITED)));

    /* A /proc/<pid> directory's descriptor serves pidfd_send_signal too. */
    pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    char path[32];
    snprintf(path, sizeof path, "/proc/%d", pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY);
    printf("send SIGKILL through /proc/<pid>: %s; ", e(pidfd_send(dfd, SIGKILL, 0)));
    int st = 0;
    waitpid(pid, &st, 0);
    printf("killed by %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    printf("a plain file: %s\n", e(pidfd_send(1, 0, 0)));
    close(dfd);

    /* CLONE_PIDFD. */
    int cfd = -1;
    long c = syscall(SYS_clone, CLONE_PIDFD_ | SIGCHLD, 0, &cfd, 0, 0);
    if (c == 0) _exit(7);
    printf("clone with CLONE_PIDFD: %s, a pidfd %d; ", e(c), cfd > 2);
    printf("readable %d\n", readable(cfd, 5000));
    memset(&si, 0, sizeof si);
    waitid(P_PIDFD_, cfd, &si, WEXITED);
    printf("its status %d, the child %d\n", si.si_status, si.si_pid == c);
    printf("CLONE_PIDFD with CLONE_PARENT_SETTID: %s\n",
           e(syscall(SYS_clone, CLONE_PIDFD_ | CLONE_PARENT_SETTID | SIGCHLD, 0, &cfd, 0, 0)));
    return 0;
}
