/* Pseudo-terminals: posix_openpt/grantpt/unlockpt/ptsname and openpty,
 * the slave is a tty, canonical mode with echo and erase, raw mode,
 * output newline translation, window size, poll readiness both ways,
 * end of file (^D), ^C as SIGINT to the foreground process group of a
 * session that took the terminal, /dev/tty there, ^Z stopping a job in
 * the foreground (tcflow too), and hang-ups when
 * either side closes (SIGHUP to the session leader). Prints only what
 * Linux defines (no pty numbers): the test compares it with a native
 * run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* Prints bytes with control characters escaped. */
static void show(const char *what, const char *b, long n) {
    printf("%s: %ld \"", what, n);
    for (long i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\r') printf("\\r");
        else if (c == '\n') printf("\\n");
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    printf("\"\n");
}

/* Reads all that arrives: waits up to 500 ms for the first bytes, then
   keeps reading until nothing more comes for 100 ms. Linux delivers a
   pty's echo to the master from a work queue, so one read can see only
   part of it. */
static long drain(int fd, char *buf, long size) {
    struct pollfd p = {fd, POLLIN, 0};
    long got = 0;
    int wait = 500;
    while (got < size && poll(&p, 1, wait) > 0 && (p.revents & POLLIN)) {
        long n = read(fd, buf + got, size - got);
        if (n <= 0) break;
        got += n;
        wait = 100;
    }
    return got;
}

static int readable(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void basics(void) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    printf("posix_openpt: %s\n", m >= 0 ? "ok" : strerror(errno));
    char *name = ptsname(m);
    printf("ptsname: /dev/pts/ prefix %d\n", name && !strncmp(name, "/dev/pts/", 9));
    int early = open(name, O_RDWR | O_NOCTTY);
    printf("open before unlockpt: %d %s\n", early, early < 0 && errno == EIO ? "EIO" : "other");
    printf("grantpt: %d unlockpt: %d\n", grantpt(m), unlockpt(m));
    int s = open(name, O_RDWR | O_NOCTTY);
    printf("open slave: %s\n", s >= 0 ? "ok" : strerror(errno));
    struct stat st;
    fstat(s, &st);
    printf("slave: chr %d isatty %d master isatty %d\n", S_ISCHR(st.st_mode), isatty(s), isatty(m));
    char *tn = ttyname(s);
    printf("ttyname = ptsname: %d\n", tn && !strcmp(tn, name));
    struct stat byname;
    stat(name, &byname);
    printf("same device: %d\n", byname.st_rdev == st.st_rdev);
    close(s);
    close(m);
    /* Linux can remove the /dev/pts entry a moment after the last close. */
    int gone = 0;
    for (int i = 0; i < 200 && !gone; i++) {
        gone = access(name, F_OK) != 0;
        if (!gone) usleep(5000);
    }
    printf("gone after close: %d\n", gone);
}

static void canonical(int m, int s) {
    char buf[256];
    struct termios t;
    tcgetattr(s, &t);
    printf("defaults: icanon %d echo %d isig %d icrnl %d onlcr %d vmin %d\n", !!(t.c_lflag & ICANON),
           !!(t.c_lflag & ECHO), !!(t.c_lflag & ISIG), !!(t.c_iflag & ICRNL), !!(t.c_oflag & ONLCR), t.c_cc[VMIN]);
    write(m, "abc", 3);
    printf("partial line readable: %d\n", readable(s));
    write(m, "\x7f" "d\r", 3);
    long n = read(s, buf, sizeof buf);
    show("slave reads", buf, n);
    n = drain(m, buf, sizeof buf);
    show("echo", buf, n);
    write(m, "two\nlines\n", 10);
    n = read(s, buf, sizeof buf);
    show("one line per read", buf, n);
    n = read(s, buf, sizeof buf);
    show("then the next", buf, n);
    drain(m, buf, sizeof buf);
    write(m, "kill me\x15" "kept\x04", 13);
    n = read(s, buf, sizeof buf);
    show("^U then ^D", buf, n);
    write(m, "\x04", 1);
    n = read(s, buf, sizeof buf);
    printf("^D alone: %ld\n", n);
    n = drain(m, buf, sizeof buf);
    show("echo of kill", buf, n);
    write(s, "out\n", 4);
    n = drain(m, buf, sizeof buf);
    show("slave output", buf, n);
}

static void raw(int m, int s) {
    char buf[256];
    struct termios t, saved;
    tcgetattr(s, &saved);
    t = saved;
    cfmakeraw(&t);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    printf("tcsetattr raw: %d\n", tcsetattr(s, TCSANOW, &t));
    write(m, "x\r\x03\x7f", 4);
    long n = drain(s, buf, sizeof buf);
    show("raw slave reads", buf, n);
    printf("raw echo: %d\n", readable(m));
    write(s, "a\nb", 3);
    n = drain(m, buf, sizeof buf);
    show("raw output", buf, n);
    tcsetattr(s, TCSAFLUSH, &saved);
    struct termios back;
    tcgetattr(s, &back);
    printf("restored: icanon %d echo %d\n", !!(back.c_lflag & ICANON), !!(back.c_lflag & ECHO));
}

static void winsize(int m, int s) {
    struct winsize w = {.ws_row = 24, .ws_col = 80}, got;
    printf("TIOCSWINSZ: %d\n", ioctl(m, TIOCSWINSZ, &w));
    ioctl(s, TIOCGWINSZ, &got);
    printf("TIOCGWINSZ on slave: %dx%d\n", got.ws_row, got.ws_col);
}

/* tcflow: TCIOFF and TCION on the slave send the STOP and START
   characters to the master; an unknown action is EINVAL. */
static void flow(int m, int s) {
    char buf[16];
    int off = tcflow(s, TCOOFF);
    int on = tcflow(s, TCOON);
    printf("tcflow TCOOFF, TCOON: %d %d\n", off, on);
    off = tcflow(s, TCIOFF);
    on = tcflow(s, TCION);
    printf("tcflow TCIOFF, TCION: %d %d\n", off, on);
    show("master reads", buf, drain(m, buf, sizeof buf));
    int r = tcflow(s, -1);
    printf("tcflow -1: %d %s\n", r, errno == EINVAL ? "EINVAL" : "?");
}

/* Forks a child that leads a new session with the slave `s` as its
   controlling terminal (it exits 10 if the terminal will not be its).
   Returns the child's pid, or 0 in the child. */
static pid_t fork_leader(int m, int s) {
    pid_t c = fork();
    if (c == 0) {
        close(m);
        setsid();
        if (ioctl(s, TIOCSCTTY, 0)) _exit(10);
    }
    return c;
}

static void interrupt(void) {
    int m, s;
    char buf[256];
    openpty(&m, &s, 0, 0, 0);
    pid_t c = fork_leader(m, s);
    if (c == 0) {
        int tty = open("/dev/tty", O_RDWR);
        if (tty < 0) _exit(11);
        dup2(s, 0);
        write(tty, "ready\n", 6);
        char x;
        read(0, &x, 1); /* ^C ends this process */
        _exit(12);
    }
    close(s);
    long n = read(m, buf, sizeof buf);
    show("child says", buf, n);
    write(m, "\x03", 1);
    int st;
    waitpid(c, &st, 0);
    printf("child: signaled %d sig %d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    n = drain(m, buf, sizeof buf);
    show("echo of ^C", buf, n);
    /* The slave is closed everywhere now: the master reads EIO. */
    errno = 0;
    n = read(m, buf, sizeof buf);
    printf("master after hang-up: %ld %s\n", n, errno == EIO ? "EIO" : "other");
    close(m);
}

/* ^Z stops the terminal's foreground job, as a shell with job control
   sees it: a session leader runs a job in a process group of its own,
   gives it the terminal, and waits for it with WUNTRACED. The session
   leader's own group is orphaned, so ^Z leaves the leader running. */
static void suspend(void) {
    int m, s;
    char buf[256];
    openpty(&m, &s, 0, 0, 0);
    pid_t c = fork_leader(m, s);
    if (c == 0) {
        signal(SIGTTOU, SIG_IGN);
        pid_t job = fork();
        if (job == 0) {
            setpgid(0, 0);
            for (;;) pause();
        }
        setpgid(job, job);
        tcsetpgrp(s, job);
        write(s, "job\n", 4);
        int st;
        waitpid(job, &st, WUNTRACED);
        char line[64];
        int n = snprintf(line, sizeof line, "job stopped %d sig %d\n", WIFSTOPPED(st), WIFSTOPPED(st) ? WSTOPSIG(st) : -1);
        tcsetpgrp(s, getpgrp());
        write(s, line, n);
        kill(job, SIGKILL);
        waitpid(job, &st, 0);
        _exit(0);
    }
    close(s);
    long n = drain(m, buf, sizeof buf);
    show("leader says", buf, n);
    write(m, "\x1a", 1);
    int st;
    waitpid(c, &st, 0);
    n = drain(m, buf, sizeof buf);
    show("after ^Z", buf, n);
    printf("leader: exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    close(m);
}

static void master_closes(void) {
    int m, s;
    openpty(&m, &s, 0, 0, 0);
    close(m);
    char buf[16];
    long n = read(s, buf, sizeof buf);
    printf("slave read after master closed: %ld\n", n);
    errno = 0;
    n = write(s, "x", 1);
    printf("slave write after master closed: %ld %s\n", n, errno == EIO ? "EIO" : "other");
    struct pollfd p = {s, POLLIN | POLLOUT, 0};
    poll(&p, 1, 0);
    printf("slave poll: hup %d\n", !!(p.revents & POLLHUP));
    close(s);
}

/* Closing the master hangs up the session that has the terminal: its
 * leader gets SIGHUP. */
static void hangup(void) {
    int m, s;
    char buf[64];
    openpty(&m, &s, 0, 0, 0);
    pid_t c = fork_leader(m, s);
    if (c == 0) {
        write(s, "up\n", 3);
        for (;;) pause();
    }
    close(s);
    read(m, buf, sizeof buf);
    close(m);
    int st;
    waitpid(c, &st, 0);
    printf("session leader after hang-up: signaled %d sig %d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : -1);
}

int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    printf("stdin isatty: %d\n", isatty(0));
    basics();
    int m, s;
    struct winsize w0 = {.ws_row = 10, .ws_col = 20};
    printf("openpty: %d\n", openpty(&m, &s, 0, 0, &w0));
    struct winsize got;
    ioctl(m, TIOCGWINSZ, &got);
    printf("openpty winsize: %dx%d\n", got.ws_row, got.ws_col);
    canonical(m, s);
    raw(m, s);
    winsize(m, s);
    flow(m, s);
    close(s);
    close(m);
    interrupt();
    suspend();
    master_closes();
    hangup();
    return 0;
}
