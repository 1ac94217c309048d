#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
/* Calls a syscall number Linux does not have (500) and prints what it got. */
int main(void) {
    long r = syscall(500, 1, 2, 3);
    printf("ret=%ld errno=%s\n", r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
    return 0;
}
