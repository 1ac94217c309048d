/* Hostile process-control calls: prctl with random options and
 * arguments (pointers into memory, unmapped, kernel and non-canonical
 * addresses, huge numbers), madvise over a scratch mapping and at hostile
 * addresses, fcntl's owner, signal and status flags (O_ASYNC) on pipes
 * and sockets, random bytes written to the comm files, stop, continue
 * and other signals to two children, waits with every option, and reads
 * of /sys and /proc. Whatever the calls return, the program must keep
 * running: every catchable signal has a handler and an interval timer
 * interrupts any call that would wait for ever. Prints how many calls
 * it made. An argument varies the random sequence. Guest only: natively
 * its F_SETOWN of random process ids would signal the host's processes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static unsigned char buf[4096];
static volatile unsigned long signals;
static void on_signal(int sig) {
    (void)sig;
    signals++;
}

#define SCRATCH (64 * 4096)
static unsigned char *scratch;

static uint64_t hostile_addr(void) {
    // Unmapped, non-canonical, the runtime's part, the vsyscall page.
    static const uint64_t addrs[] = {0, 0x1000, 0x7f0000000000ull, 0x800000000000ull, 0xffff800000000000ull,
                                     0xffff800000200000ull, 0xffffffffff600000ull, UINT64_MAX};
    switch (rnd() % 4) {
    case 0: return (uint64_t)buf + rnd() % sizeof buf;
    case 1: return (uint64_t)scratch + (rnd() % 64) * 4096;
    default: return addrs[rnd() % 8];
    }
}

static uint64_t number(void) {
    switch (rnd() % 4) {
    case 0: return rnd() % 4;
    case 1: return rnd() % 70;
    case 2: return hostile_addr();
    default: return rnd();
    }
}

static pid_t child(void) {
    pid_t c = fork();
    if (c == 0) {
        for (;;) pause();
    }
    return c;
}

int main(int argc, char **argv) {
    if (argc > 1) state ^= strtoull(argv[1], NULL, 0) * 0x9e3779b97f4a7c15ull;
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    for (int s = 1; s < 65; s++) {
        if (s != SIGKILL && s != SIGSTOP && s != SIGCHLD) sigaction(s, &sa, NULL);
    }
    struct itimerval it = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
    scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fds[8];
    pipe2(fds, O_NONBLOCK);
    pipe2(fds + 2, O_NONBLOCK);
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds + 4);
    fds[6] = open("/tmp", O_RDONLY | O_DIRECTORY);
    fds[7] = open("/proc/self/comm", O_RDWR);
    pid_t kids[2] = {child(), child()};
    static const char *files[] = {"/sys/fs/cgroup/memory.current", "/sys/devices/system/cpu/online",
                                  "/proc/self/status", "/proc/self/stat", "/sys/fs/cgroup/cgroup.procs",
                                  "/proc/1/comm", "/proc/self/task"};
    static const int sigs[] = {SIGSTOP, SIGCONT, SIGTSTP, SIGTTIN, SIGUSR1, SIGIO, SIGCHLD, 0};
    long calls = 0;
    for (int i = 0; i < 6000; i++, calls++) {
        memset(scratch + (rnd() % SCRATCH), (int)rnd(), 1);
        switch (rnd() % 9) {
        case 0:
        {
            // (Not the options that would end or confine the program
            // natively: seccomp, PR_SET_MM, PR_SET_TSC, syscall user
            // dispatch, memory-deny-write-execute.)
            uint64_t option = rnd() % 2 ? rnd() % 60 : number();
            if (option == 22 || option == 35 || option == 26 || option == 59 || option == 65) break;
            syscall(SYS_prctl, option, number(), number(), number(), number());
        }
            break;
        case 1: {
            // Within the scratch mapping, at the bottom of the address
            // space, or at and past the end of the program's part, with any
            // length there (advice over the program's own stack or code
            // would end it).
            static const uint64_t away[] = {0x800000000000ull, 0xffff800000000000ull, 0xffff800000200000ull,
                                            0xffffffffff600000ull, 0x7ffffffff000ull};
            uint64_t at, len;
            uint64_t page = rnd() % 64;
            switch (rnd() % 3) {
            case 0:
                at = (uint64_t)scratch + page * 4096;
                len = (rnd() % (65 - page)) * 4096;
                if (len && rnd() % 2) len -= rnd() % 4096;
                break;
            case 1:
                at = (rnd() % 2) * 4096;
                len = (rnd() % 64) * 4096;
                break;
            default:
                at = away[rnd() % 5] + page * 4096 * (rnd() % 2);
                len = rnd() % 2 ? rnd() : (uint64_t)1 << (rnd() % 64);
                break;
            }
            syscall(SYS_madvise, at, len, rnd() % 2 ? rnd() % 26 : number());
            break;
        }
        case 2: {
            static const int cmds[] = {F_SETFL, F_GETFL, F_SETOWN, F_GETOWN, F_SETSIG, F_GETSIG, F_SETOWN_EX, F_NOTIFY};
            int cmd = cmds[rnd() % 8];
            uint64_t arg = number();
            if (cmd == F_SETOWN && rnd() % 2) arg = getpid();
            if (cmd == F_SETFL && rnd() % 2) arg = O_ASYNC | O_NONBLOCK | (rnd() % 2 ? O_APPEND : 0);
            // (musl keeps signals 32 to 34 to itself: no handler here; and
            // SIGKILL or a stop signal would end or stop the program.)
            if (cmd == F_SETSIG && ((arg >= 32 && arg <= 34) || arg == SIGKILL || (arg >= SIGSTOP && arg <= SIGTTOU)))
                arg = SIGUSR2;
            syscall(SYS_fcntl, fds[rnd() % 8], cmd, arg);
            break;
        }
        case 3:
            write(fds[1 + 2 * (rnd() % 2)], buf, rnd() % 300);
            read(fds[2 * (rnd() % 2)], buf, rnd() % 300);
            write(fds[4 + rnd() % 2], buf, rnd() % 100);
            read(fds[4 + rnd() % 2], buf, rnd() % 100);
            break;
        case 4: {
            char path[64];
            snprintf(path, sizeof path, "/proc/self/task/%d/comm", rnd() % 2 ? getpid() : (int)(rnd() % 8));
            int fd = open(path, O_WRONLY);
            for (size_t k = 0; k < 64; k++) buf[k] = (unsigned char)rnd();
            if (fd >= 0) {
                write(fd, buf, rnd() % 64);
                close(fd);
            }
            syscall(SYS_write, fds[7], hostile_addr(), rnd() % 32);
            break;
        }
        case 5: {
            int k = rnd() % 2;
            if (kill(kids[k], sigs[rnd() % 8]) != 0 || rnd() % 50 == 0) {
                kill(kids[k], SIGKILL);
                waitpid(kids[k], NULL, 0);
                kids[k] = child();
            }
            break;
        }
        case 6: {
            int st;
            siginfo_t si;
            waitpid(-1, &st, WNOHANG | (rnd() % 2 ? WUNTRACED : 0) | (rnd() % 2 ? WCONTINUED : 0));
            syscall(SYS_waitid, rnd() % 4, rnd() % 2 ? kids[rnd() % 2] : number(), rnd() % 2 ? &si : (void *)hostile_addr(),
                    WNOHANG | (rnd() % 2 ? number() : WEXITED | WSTOPPED | WCONTINUED), NULL);
            break;
        }
        case 7: {
            int fd = open(files[rnd() % 7], O_RDONLY);
            if (fd >= 0) {
                read(fd, buf, rnd() % sizeof buf);
                close(fd);
            }
            break;
        }
        default:
            syscall(SYS_ioctl, fds[rnd() % 8], 0x5452 /* FIOASYNC */, rnd() % 2 ? (uint64_t)buf : hostile_addr());
            break;
        }
    }
    for (int k = 0; k < 2; k++) {
        kill(kids[k], SIGKILL);
        waitpid(kids[k], NULL, 0);
    }
    it.it_value.tv_usec = 0;
    it.it_interval.tv_usec = 0;
    setitimer(ITIMER_REAL, &it, NULL);
    printf("done: %ld calls\n", calls);
    return 0;
}
