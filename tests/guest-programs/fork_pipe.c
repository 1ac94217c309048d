/* Processes and pipes: fork + pipe + dup2 + execve, waitpid, and children
 * that die of signals.
 *
 *   fork_pipe exec    child runs `/bin/busybox echo from-child` with its
 *                     stdout on a pipe; the parent reads the pipe
 *   fork_pipe exit    child exits 42 (no exec)
 *   fork_pipe signals children die of raise(SIGKILL), a null write
 *                     (SIGSEGV) and kill(SIGTERM) from the parent        */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, int status) {
    if (WIFEXITED(status))
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("%s: signaled %d (%s)\n", what, WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        printf("%s: status %#x\n", what, status);
}

static int exec_through_pipe(void) {
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 1) != 1) _exit(100);
        close(fds[1]);
        char *argv[] = {"/bin/busybox", "echo", "from-child", NULL};
        char *envp[] = {NULL};
        execve(argv[0], argv, envp);
        dprintf(2, "execve: %s\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    char buf[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fds[0]);
    int status;
    pid_t got = waitpid(pid, &status, 0);
    printf("read %zu bytes: %s", len, buf);
    printf("waitpid matches: %d\n", got == pid);
    report("child", status);
    return 0;
}

static int wait_one(const char *what, void (*body)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        body();
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        return 1;
    }
    report(what, status);
    return 0;
}

static void exit42(void) { _exit(42); }
static void raise_kill(void) { raise(SIGKILL); }
static void null_write(void) { *(volatile int *)0 = 1; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "exec";
    if (strcmp(mode, "exec") == 0) return exec_through_pipe();
    if (strcmp(mode, "exit") == 0) return wait_one("exit", exit42);
    if (strcmp(mode, "signals") == 0) {
        if (wait_one("raise(SIGKILL)", raise_kill) || wait_one("null write", null_write)) return 1;
        /* A child blocked in pause(), killed by its parent. */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        if (pid < 0 || kill(pid, SIGTERM) != 0) {
            perror("fork/kill");
            return 1;
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) {
            perror("waitpid");
            return 1;
        }
        report("kill(SIGTERM)", status);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
