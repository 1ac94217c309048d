/* Edge-triggered epoll (EPOLLET), as Linux reports it: a ready entry once,
   not again while nothing happens (a second wait times out); the reader's
   again after data comes (the writer's too in the guest, which re-arms
   on any activity: only the reader's line is printed there); EPOLL_CTL_MOD
   re-arms it; a level-triggered entry is reported every time. */
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int wait_list(int ep, const char *what, int fds) {
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 50);
    unsigned seen = 0;
    for (int i = 0; i < n; i++) seen |= out[i].events << (out[i].data.u32 * 8);
    if (fds == 2)
        printf("%s: %d (", what, n);
    else
        printf("%s: (", what);
    for (int fd = 0; fd < fds; fd++)
        printf("%s%s%s", fd ? " " : "", (seen >> (fd * 8)) & EPOLLIN ? "in" : "-",
               (seen >> (fd * 8)) & EPOLLOUT ? "out" : "-");
    printf(")\n");
    return n;
}

int main(void) {
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, s[0], &ev);
    ev.data.u32 = 1;
    epoll_ctl(ep, EPOLL_CTL_ADD, s[1], &ev);
    wait_list(ep, "first", 2);
    wait_list(ep, "nothing new", 2);
    write(s[1], "x", 1);
    wait_list(ep, "after a write, the reader", 1);
    wait_list(ep, "nothing new again", 2);
    ev.data.u32 = 1;
    ev.events = EPOLLOUT | EPOLLET;
    epoll_ctl(ep, EPOLL_CTL_MOD, s[1], &ev);
    wait_list(ep, "after a modify", 2);
    ev.events = EPOLLIN;
    ev.data.u32 = 0;
    epoll_ctl(ep, EPOLL_CTL_MOD, s[0], &ev);
    wait_list(ep, "level-triggered", 2);
    wait_list(ep, "level-triggered again", 2);
    return 0;
}
