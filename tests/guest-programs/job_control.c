// Job control, run natively and in the guest and compared: SIGSTOP and
// SIGCONT with wait4's WUNTRACED and WCONTINUED and waitid's WSTOPPED,
// WCONTINUED and WNOWAIT, a stopped process making no progress and shown
// as T in /proc, SIGKILL ending a stopped process, SIGTSTP caught,
// ignored, by default and after being blocked, SIGCHLD's CLD_STOPPED and
// CLD_CONTINUED (none with SA_NOCLDSTOP), SIGTSTP not stopping a
// process of an orphaned group, and a parent waiting for one
// child while another is a zombie using no CPU.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

// A child that writes a byte every 5 ms to `fd`.
static pid_t ticker(int fd) {
    pid_t c = fork();
    if (c == 0) {
        for (;;) {
            write(fd, "x", 1);
            sleep_ms(5);
        }
    }
    return c;
}

static char state_of(pid_t pid) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    fgets(line, sizeof line, f);
    fclose(f);
    return strrchr(line, ')')[2];
}

static int drain(int fd) {
    char b[4096];
    int n = 0, r;
    while ((r = read(fd, b, sizeof b)) > 0) n += r;
    return n;
}

static volatile int chld_count, chld_code, chld_status, chld_pid, tstp_count;
static void on_chld(int sig, siginfo_t *si, void *c) {
    (void)sig;
    (void)c;
    chld_count++;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_pid = si->si_pid;
}
static void on_tstp(int sig) {
    (void)sig;
    tstp_count++;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);

    int p[2];
    pipe(p);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    pid_t c = ticker(p[1]);
    sleep_ms(30);
    kill(c, SIGSTOP);
    int st;
    pid_t r = waitpid(c, &st, WUNTRACED);
    printf("stopped: %d sig %d\n", r == c && WIFSTOPPED(st), WSTOPSIG(st));
    printf("SIGCHLD: code %s status %d\n", chld_code == CLD_STOPPED ? "CLD_STOPPED" : "?", chld_status);
    printf("wait without WUNTRACED: %d\n", waitpid(c, &st, WNOHANG));
    printf("the stop is told once: %d\n", waitpid(c, &st, WNOHANG | WUNTRACED));
    drain(p[0]);
    sleep_ms(50);
    printf("no progress while stopped: %s; state %c\n", drain(p[0]) == 0 ? "yes" : "no", state_of(c));
    chld_count = 0;
    kill(c, SIGCONT);
    r = waitpid(c, &st, WCONTINUED);
    printf("continued: %d\n", r == c && WIFCONTINUED(st));
    sleep_ms(30);
    // (Linux sends the parent's SIGCHLD once the child runs again.)
    printf("progress again: %s; SIGCHLD: %s\n", drain(p[0]) > 0 ? "yes" : "no",
           chld_code == CLD_CONTINUED ? "CLD_CONTINUED" : "?");

    // waitid: WSTOPPED with WNOWAIT keeps the report for the next wait.
    kill(c, SIGSTOP);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    waitid(P_PID, c, &si, WSTOPPED | WNOWAIT);
    printf("waitid WNOWAIT: code %s status %d\n", si.si_code == CLD_STOPPED ? "CLD_STOPPED" : "?", si.si_status);
    memset(&si, 0, sizeof si);
    waitid(P_PID, c, &si, WSTOPPED);
    printf("waitid again: code %s\n", si.si_code == CLD_STOPPED ? "CLD_STOPPED" : "?");
    kill(c, SIGCONT);
    memset(&si, 0, sizeof si);
    waitid(P_PID, c, &si, WCONTINUED);
    printf("waitid WCONTINUED: code %s status %d\n", si.si_code == CLD_CONTINUED ? "CLD_CONTINUED" : "?",
           si.si_status);

    // SIGKILL ends a stopped process.
    kill(c, SIGSTOP);
    waitpid(c, &st, WUNTRACED);
    kill(c, SIGKILL);
    r = waitpid(c, &st, 0);
    printf("killed while stopped: %d\n", r == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    // SIGTSTP: caught, ignored, by default.
    int q[2];
    pipe(q);
    c = fork();
    if (c == 0) {
        signal(SIGTSTP, on_tstp);
        write(q[1], "r", 1);
        while (tstp_count == 0) pause();
        signal(SIGTSTP, SIG_IGN);
        write(q[1], "c", 1);
        pause();
        _exit(0);
    }
    char b;
    read(q[0], &b, 1);
    kill(c, SIGTSTP);
    read(q[0], &b, 1);
    printf("SIGTSTP caught: %s\n", b == 'c' ? "yes" : "no");
    kill(c, SIGTSTP);
    sleep_ms(20);
    printf("SIGTSTP ignored: %s\n", waitpid(c, &st, WNOHANG | WUNTRACED) == 0 ? "yes" : "no");
    kill(c, SIGKILL);
    waitpid(c, &st, 0);

    int go[2];
    pipe(go);
    c = fork();
    if (c == 0) {
        // A group of its own, whose parent is in another group of the
        // session: not orphaned, however this program was started (a
        // default SIGTSTP does not stop a process of an orphaned group).
        setpgid(0, 0);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTSTP);
        sigprocmask(SIG_BLOCK, &set, NULL);
        write(q[1], "b", 1);
        read(go[0], &b, 1); // wait for the parent's go
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        write(q[1], "u", 1); // after the continue
        _exit(4);
    }
    setpgid(c, c);
    read(q[0], &b, 1);
    kill(c, SIGTSTP);
    sleep_ms(20);
    printf("blocked SIGTSTP does not stop: %s\n", waitpid(c, &st, WNOHANG | WUNTRACED) == 0 ? "yes" : "no");
    write(go[1], "g", 1);
    r = waitpid(c, &st, WUNTRACED);
    printf("stops once unblocked: %d sig %d\n", r == c && WIFSTOPPED(st), WSTOPSIG(st));
    kill(c, SIGCONT);
    r = waitpid(c, &st, 0);
    printf("then runs on: exit %d\n", WEXITSTATUS(st));
    read(q[0], &b, 1);

    // A session of its own: its group is orphaned, so SIGTSTP does not
    // stop it; SIGSTOP does.
    c = fork();
    if (c == 0) {
        setsid();
        write(q[1], "s", 1);
        for (;;) pause();
    }
    read(q[0], &b, 1);
    kill(c, SIGTSTP);
    sleep_ms(20);
    printf("SIGTSTP in an orphaned group stops: %s\n", waitpid(c, &st, WNOHANG | WUNTRACED) == 0 ? "no" : "yes");
    kill(c, SIGSTOP);
    r = waitpid(c, &st, WUNTRACED);
    printf("SIGSTOP there stops: %d\n", r == c && WIFSTOPPED(st));
    kill(c, SIGKILL);
    waitpid(c, &st, 0);

    // SA_NOCLDSTOP: no SIGCHLD for stops.
    sa.sa_flags |= SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    chld_count = 0;
    c = ticker(p[1]);
    kill(c, SIGSTOP);
    waitpid(c, &st, WUNTRACED);
    kill(c, SIGCONT);
    waitpid(c, &st, WCONTINUED);
    printf("SIGCHLD with SA_NOCLDSTOP: %d\n", chld_count);

    // An exit's SIGCHLD names the child and its code.
    pid_t e = fork();
    if (e == 0) _exit(7);
    waitpid(e, &st, 0);
    printf("SIGCHLD at an exit: code %s status %d from the child: %s\n", chld_code == CLD_EXITED ? "CLD_EXITED" : "?",
           chld_status, chld_pid == e ? "yes" : "no");

    // Waiting for this child while another is a zombie takes no CPU.
    pid_t quick = fork();
    if (quick == 0) _exit(0);
    sleep_ms(20);
    pid_t slow = fork();
    if (slow == 0) {
        sleep_ms(300);
        _exit(0);
    }
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    waitpid(slow, &st, 0);
    getrusage(RUSAGE_SELF, &after);
    long used_ms = (after.ru_utime.tv_sec - before.ru_utime.tv_sec) * 1000 +
                   (after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1000 +
                   (after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1000 +
                   (after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1000;
    printf("waiting beside a zombie uses no CPU: %s\n", used_ms < 100 ? "yes" : "no");
    printf("the zombie is still there: %d\n", waitpid(quick, &st, 0) == quick);
    kill(c, SIGKILL);
    waitpid(c, &st, 0);
    return 0;
}
