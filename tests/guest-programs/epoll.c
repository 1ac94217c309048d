/* epoll over a pipe and an eventfd, fed by a forked child after a short sleep. */
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <sys/wait.h>
#include <stdint.h>
int main(void) {
    int p[2]; pipe(p);
    int ev = eventfd(0, 0);
    int ep = epoll_create1(0);
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 7 };
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
    e.data.u64 = 9; epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
    struct epoll_event out[4];
    printf("idle=%d\n", epoll_wait(ep, out, 4, 0));
    pid_t c = fork();
    if (c == 0) { usleep(10000); write(p[1], "x", 1); uint64_t one = 1; write(ev, &one, 8); _exit(0); }
    int total = 0;
    while (total < 2) {
        int n = epoll_wait(ep, out, 4, 1000);
        for (int i = 0; i < n; i++) {
            printf("ready data=%llu\n", (unsigned long long)out[i].data.u64);
            if (out[i].data.u64 == 7) { char b; read(p[0], &b, 1); } else { uint64_t v; read(ev, &v, 8); }
            total++;
        }
        if (n == 0) { printf("timeout\n"); break; }
    }
    waitpid(c, 0, 0);
    printf("done %d\n", total);
    return 0;
}
