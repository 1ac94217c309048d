/* clone(CLONE_CHILD_SETTID) without CLONE_VM, as glibc's fork makes it:
 * the child finds its tid at the address in its own copy of memory, the
 * parent's copy keeps what it had, and an address the child cannot write
 * is skipped (the child runs all the same), as on Linux. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int slot = -1;

int main(void) {
    long r = syscall(SYS_clone, CLONE_CHILD_SETTID | SIGCHLD, 0, NULL, &slot, 0);
    if (r == 0) _exit(slot == syscall(SYS_gettid) ? 0 : 1);
    int st = 0;
    if (r < 0 || waitpid((pid_t)r, &st, 0) != r) return 2;
    printf("child saw its tid: %s; the parent's copy: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no",
           slot == -1 ? "unchanged" : "changed");
    r = syscall(SYS_clone, CLONE_CHILD_SETTID | SIGCHLD, 0, NULL, (void *)8, 0);
    if (r == 0) _exit(7);
    if (r < 0) {
        printf("bad address: clone failed\n");
        return 0;
    }
    waitpid((pid_t)r, &st, 0);
    printf("bad address: child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
