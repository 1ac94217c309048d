/* Signals carry their siginfo and real-time ones queue (tests/processes.rs
 * runs this natively and in the guest and compares): sigqueue's values
 * arrive in order, each once, through sigwaitinfo, a SA_SIGINFO handler
 * and signalfd; a standard signal sent twice while blocked is pending
 * once; kill and tgkill say who sent them (SI_USER, SI_TKILL and the
 * sender's pid, also from another process); another process may not be
 * sent a siginfo that claims to be the kernel's (EPERM); SIG_IGN drops
 * what is queued. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int seen[16], nseen;

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (nseen < 16) seen[nseen++] = si->si_value.sival_int;
}

static const char *code_name(int code) {
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_QUEUE: return "SI_QUEUE";
    case SI_TKILL: return "SI_TKILL";
    default: return "other";
    }
}

/* Takes every pending signal of `set` now, printing each. */
static void take_all(const char *what, sigset_t *set, pid_t from) {
    struct timespec zero = {0, 0};
    siginfo_t si;
    printf("%s:\n", what);
    for (;;) {
        int sig = sigtimedwait(set, &si, &zero);
        if (sig < 0) break;
        int name = sig >= SIGRTMIN ? sig - SIGRTMIN : -sig;
        printf("  sig %s%d %s from %s value %d\n", sig >= SIGRTMIN ? "RTMIN+" : "-", sig >= SIGRTMIN ? name : -name,
               code_name(si.si_code), si.si_pid == from ? "the sender" : "someone else",
               si.si_code == SI_QUEUE ? si.si_value.sival_int : -1);
    }
}

int main(void) {
    int rt = SIGRTMIN + 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, rt);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);

    for (int v = 1; v <= 3; v++) sigqueue(getpid(), rt, (union sigval){.sival_int = v});
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1);
    sigset_t pend;
    sigpending(&pend);
    printf("pending: rt %d usr1 %d\n", sigismember(&pend, rt), sigismember(&pend, SIGUSR1));
    take_all("three sigqueues, two kills", &set, getpid());

    syscall(SYS_tgkill, getpid(), gettid(), SIGUSR1);
    take_all("tgkill", &set, getpid());

    pid_t child = fork();
    if (child == 0) {
        sigqueue(getppid(), rt, (union sigval){.sival_int = 42});
        kill(getppid(), SIGUSR1);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    take_all("from a child", &set, child);

    /* A handler runs once per queued signal, in order. */
    int hs = SIGRTMIN + 3;
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(hs, &sa, NULL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, hs);
    sigprocmask(SIG_BLOCK, &one, NULL);
    for (int v = 10; v < 15; v++) sigqueue(getpid(), hs, (union sigval){.sival_int = v});
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    printf("handler ran %d times:", nseen);
    for (int i = 0; i < nseen; i++) printf(" %d", seen[i]);
    printf("\n");

    /* signalfd reads each with its value. */
    int fs = SIGRTMIN + 4;
    sigset_t fset;
    sigemptyset(&fset);
    sigaddset(&fset, fs);
    sigprocmask(SIG_BLOCK, &fset, NULL);
    sigqueue(getpid(), fs, (union sigval){.sival_int = 7});
    sigqueue(getpid(), fs, (union sigval){.sival_int = 8});
    int sfd = signalfd(-1, &fset, SFD_NONBLOCK);
    struct signalfd_siginfo r[4];
    ssize_t n = read(sfd, r, sizeof r);
    int records = n < 0 ? -1 : (int)(n / (ssize_t)sizeof r[0]);
    printf("signalfd: %d records\n", records);
    for (int i = 0; i < records; i++) {
        int code = r[i].ssi_code;
        int self = r[i].ssi_pid == (unsigned)getpid();
        int uid = r[i].ssi_uid == getuid();
        printf("  %s value %d from self %d uid %d\n", code_name(code), r[i].ssi_int, self, uid);
    }
    close(sfd);

    /* Another process may not be sent a siginfo claiming to be the kernel's. */
    child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    siginfo_t fake;
    memset(&fake, 0, sizeof fake);
    fake.si_signo = SIGUSR2;
    fake.si_code = SI_USER;
    errno = 0;
    long res = syscall(SYS_rt_sigqueueinfo, child, SIGUSR2, &fake);
    printf("rt_sigqueueinfo SI_USER to another process: %ld errno %d\n", res, errno);
    fake.si_code = SI_QUEUE;
    res = syscall(SYS_rt_sigqueueinfo, child, SIGTERM, &fake);
    int status = 0;
    waitpid(child, &status, 0);
    printf("SI_QUEUE to another process: %ld, it died of signal %d\n", res, WIFSIGNALED(status) ? WTERMSIG(status) : 0);

    /* SIG_IGN drops what is queued. */
    int is = SIGRTMIN + 5;
    sigset_t iset;
    sigemptyset(&iset);
    sigaddset(&iset, is);
    sigprocmask(SIG_BLOCK, &iset, NULL);
    sigqueue(getpid(), is, (union sigval){.sival_int = 1});
    sigqueue(getpid(), is, (union sigval){.sival_int = 2});
    signal(is, SIG_IGN);
    signal(is, SIG_DFL);
    sigpending(&pend);
    printf("after SIG_IGN: pending %d\n", sigismember(&pend, is));
    return 0;
}
