/* fexecve (execveat with AT_EMPTY_PATH): the program a descriptor has open
   runs, whatever the working directory is. The child prints what it was
   started as and where /proc/self/exe points (this same program). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1) {
        char exe[PATH_MAX] = "";
        readlink("/proc/self/exe", exe, sizeof exe - 1);
        char me[PATH_MAX] = "";
        realpath(argv[2], me);
        printf("child: started with %s, exe is the program: %s\n", argv[1], strcmp(exe, me) == 0 ? "yes" : exe);
        return 0;
    }
    char self[PATH_MAX] = "";
    realpath("/proc/self/exe", self);
    int fd = open(self, O_RDONLY | O_CLOEXEC);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        chdir("/");
        char *args[] = {argv[0], "fexecve", self, NULL};
        char *env[] = {NULL};
        fexecve(fd, args, env);
        printf("fexecve failed\n");
        _exit(1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("parent: child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
