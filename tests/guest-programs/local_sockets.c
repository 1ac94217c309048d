/* Local sockets: AF_UNIX by path and abstract name, datagrams with
 * sender addresses, SCM_RIGHTS and SCM_CREDENTIALS, socketpair types,
 * loopback TCP and UDP (IPv4 and IPv6), readiness, and the errors Linux
 * gives. Prints only what is the same on every machine. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *en(int e) {
    switch (e) {
    case 0: return "ok";
    case ENOENT: return "ENOENT";
    case EADDRINUSE: return "EADDRINUSE";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EISCONN: return "EISCONN";
    case EPIPE: return "EPIPE";
    case ENXIO: return "ENXIO";
    case EPROTOTYPE: return "EPROTOTYPE";
    case EINPROGRESS: return "EINPROGRESS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EMSGSIZE: return "EMSGSIZE";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EDOM: return "EDOM";
    case EPERM: return "EPERM";
    case ECONNRESET: return "ECONNRESET";
    default: { static char b[32]; snprintf(b, sizeof b, "errno%d", e); return b; }
    }
}

/* The errno of a call that returned r (ok when it succeeded). */
#define ERR(r) ((r) < 0 ? en(errno) : "ok")

static socklen_t unix_addr(struct sockaddr_un *a, const char *path, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (abstract) {
        memcpy(a->sun_path + 1, path, strlen(path));
        return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
    }
    strcpy(a->sun_path, path);
    return sizeof *a;
}

static void unix_stream(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/lsock-%d", (int)getpid());
    struct sockaddr_un a;
    socklen_t al = unix_addr(&a, path, 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect missing: %s\n", ERR(connect(c, (struct sockaddr *)&a, al)));
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    printf("listen unbound: %s\n", ERR(listen(l, 5)));
    printf("bind: %s\n", ERR(bind(l, (struct sockaddr *)&a, al)));
    int l2 = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("bind taken: %s\n", ERR(bind(l2, (struct sockaddr *)&a, al)));
    close(l2);
    struct stat st;
    stat(path, &st);
    printf("node is socket: %d\n", S_ISSOCK(st.st_mode));
    printf("open node: %s\n", ERR(open(path, O_RDONLY)));
    printf("connect not listening: %s\n", ERR(connect(c, (struct sockaddr *)&a, al)));
    printf("listen: %s\n", ERR(listen(l, 5)));
    int v = 0;
    socklen_t vl = sizeof v;
    getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl);
    printf("acceptconn=%d\n", v);
    fcntl(l, F_SETFL, O_NONBLOCK);
    printf("accept empty: %s\n", ERR(accept(l, NULL, NULL)));
    fcntl(l, F_SETFL, 0);
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    getsockname(l, (struct sockaddr *)&got, &gl);
    printf("sockname len ok=%d same=%d\n", gl == offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1,
           strcmp(got.sun_path, path) == 0);
    close(c);

    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, al) != 0) _exit(2);
        struct sockaddr_un p;
        socklen_t pl = sizeof p;
        getpeername(s, (struct sockaddr *)&p, &pl);
        if (strcmp(p.sun_path, path) != 0) _exit(3);
        for (int i = 0; i < 3; i++) {
            char msg[32], back[32];
            int n = snprintf(msg, sizeof msg, "ping %d", i);
            write(s, msg, n);
            int m = read(s, back, sizeof back - 1);
            back[m > 0 ? m : 0] = 0;
            printf("client got: %s\n", back);
            fflush(stdout);
        }
        shutdown(s, SHUT_WR);
        char b;
        _exit(read(s, &b, 1) == 0 ? 0 : 4);
    }
    struct pollfd p = {l, POLLIN, 0};
    int ready = poll(&p, 1, 5000);
    printf("poll listener: %d revents=%d\n", ready, p.revents);
    struct sockaddr_un peer;
    socklen_t pl = sizeof peer;
    int s = accept4(l, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
    printf("accepted=%d peer unnamed=%d cloexec=%d\n", s >= 0, pl == sizeof(sa_family_t),
           (fcntl(s, F_GETFD) & FD_CLOEXEC) != 0);
    struct ucred cr;
    socklen_t cl = sizeof cr;
    getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &cl);
    printf("peercred pid=%d len=%d\n", cr.pid == pid, (int)cl);
    v = 0;
    vl = sizeof v;
    getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &vl);
    printf("so_type stream=%d\n", v == SOCK_STREAM);
    char buf[64];
    int n;
    while ((n = read(s, buf, sizeof buf)) > 0) {
        for (int i = 0; i < n; i++) if (buf[i] == 'p') buf[i] = 'P';
        write(s, buf, n);
    }
    printf("server eof=%d\n", n);
    close(s);
    int status;
    waitpid(pid, &status, 0);
    printf("client exit=%d\n", WEXITSTATUS(status));
    /* A full backlog: a non-blocking connect is told to try again;
     * select sees the listener readable. */
    listen(l, 0);
    int c1 = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int c2 = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    printf("backlog 0, first: %s\n", ERR(connect(c1, (struct sockaddr *)&a, al)));
    printf("backlog 0, second: %s\n", ERR(connect(c2, (struct sockaddr *)&a, al)));
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(l, &rd);
    struct timeval tv0 = {1, 0};
    int sel = select(l + 1, &rd, NULL, NULL, &tv0);
    printf("select listener: %d %d\n", sel, FD_ISSET(l, &rd) != 0);
    close(c1);
    close(c2);
    close(l);
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect stale: %s\n", ERR(connect(c, (struct sockaddr *)&a, al)));
    printf("unlink: %s\n", ERR(unlink(path)));
    printf("connect unlinked: %s\n", ERR(connect(c, (struct sockaddr *)&a, al)));
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    snprintf(path, sizeof path, "/tmp/lsock-d-%d", (int)getpid());
    al = unix_addr(&a, path, 0);
    bind(d, (struct sockaddr *)&a, al);
    printf("stream to dgram: %s\n", ERR(connect(c, (struct sockaddr *)&a, al)));
    unlink(path);
    close(d);
    close(c);
}

static void abstract_dgram(void) {
    char name[64];
    snprintf(name, sizeof name, "lsock-abstract-%d", (int)getpid());
    struct sockaddr_un a;
    socklen_t al = unix_addr(&a, name, 1);
    int srv = socket(AF_UNIX, SOCK_DGRAM, 0);
    printf("abstract bind: %s\n", ERR(bind(srv, (struct sockaddr *)&a, al)));
    int dup_ = socket(AF_UNIX, SOCK_DGRAM, 0);
    printf("abstract taken: %s\n", ERR(bind(dup_, (struct sockaddr *)&a, al)));
    close(dup_);
    int cli = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un auto_;
    memset(&auto_, 0, sizeof auto_);
    auto_.sun_family = AF_UNIX;
    printf("autobind: %s\n", ERR(bind(cli, (struct sockaddr *)&auto_, sizeof(sa_family_t))));
    struct sockaddr_un me;
    socklen_t ml = sizeof me;
    getsockname(cli, (struct sockaddr *)&me, &ml);
    printf("autobind name len=%d abstract=%d\n", (int)ml, me.sun_path[0] == 0);
    printf("sendto: %zd\n", sendto(cli, "hello", 5, 0, (struct sockaddr *)&a, al));
    printf("sendto 2: %zd\n", sendto(cli, "second!", 7, 0, (struct sockaddr *)&a, al));
    char buf[64];
    struct sockaddr_un from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(srv, buf, 3, 0, (struct sockaddr *)&from, &fl);
    printf("recvfrom truncated=%zd from same=%d\n", n, fl == ml && memcmp(&from, &me, ml) == 0);
    fl = sizeof from;
    n = recvfrom(srv, buf, sizeof buf, MSG_PEEK | MSG_TRUNC, (struct sockaddr *)&from, &fl);
    printf("peek trunc=%zd\n", n);
    n = recvfrom(srv, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    buf[n] = 0;
    printf("second: %s\n", buf);
    printf("reply: %zd\n", sendto(srv, "back", 4, 0, (struct sockaddr *)&from, fl));
    n = recv(cli, buf, sizeof buf, 0);
    buf[n] = 0;
    printf("client got: %s\n", buf);
    printf("recv empty: %s\n", ERR(recv(cli, buf, sizeof buf, MSG_DONTWAIT)));
    /* An unnamed sender: no address. */
    int anon = socket(AF_UNIX, SOCK_DGRAM, 0);
    sendto(anon, "x", 1, 0, (struct sockaddr *)&a, al);
    fl = sizeof from;
    recvfrom(srv, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    printf("unnamed sender len=%d\n", (int)fl);
    printf("send unconnected: %s\n", ERR(send(anon, "x", 1, 0)));
    printf("connect dgram: %s\n", ERR(connect(anon, (struct sockaddr *)&a, al)));
    printf("send connected: %s\n", ERR(send(anon, "y", 1, 0)));
    recv(srv, buf, sizeof buf, 0);
    /* The server, connected to `anon`, takes datagrams from it only. */
    printf("connect back: %s\n", ERR(connect(srv, (struct sockaddr *)&me, ml)));
    printf("sendto connected other: %s\n", ERR(sendto(anon, "w", 1, 0, (struct sockaddr *)&a, al)));
    printf("sendto connected peer: %s\n", ERR(sendto(cli, "w", 1, 0, (struct sockaddr *)&a, al)));
    recv(srv, buf, sizeof buf, 0);
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    printf("disconnect: %s\n", ERR(connect(srv, &unspec, sizeof unspec)));
    /* A full queue. */
    fcntl(anon, F_SETFL, O_NONBLOCK);
    int sent = 0;
    while (send(anon, "z", 1, 0) == 1 && sent < 1000) sent++;
    printf("queue full after some: %d err=%s\n", sent > 0 && sent < 1000, en(errno));
    close(srv);
    printf("send to closed peer: %s\n", ERR(send(anon, "y", 1, 0)));
    printf("sendto gone: %s\n", ERR(sendto(cli, "x", 1, 0, (struct sockaddr *)&a, al)));
    close(anon);
    close(cli);
}

/* A message header with one buffer and a control buffer. */
static struct msghdr msg1(struct iovec *iov, void *ctl, size_t ctllen) {
    struct msghdr m = {0};
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = ctllen;
    return m;
}

static int send_fd(int s, int fd, const char *data) {
    char c[CMSG_SPACE(sizeof(int))];
    memset(c, 0, sizeof c);
    struct iovec iov = {(void *)data, strlen(data)};
    struct msghdr m = msg1(&iov, c, sizeof c);
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    return sendmsg(s, &m, 0);
}

static void rights(void) {
    int sv[2], p[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pipe(p);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        close(p[0]);
        close(p[1]);
        char buf[16], c[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {buf, sizeof buf};
        struct msghdr m = msg1(&iov, c, sizeof c);
        ssize_t n = recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC);
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        if (n != 4 || !h || h->cmsg_type != SCM_RIGHTS) _exit(2);
        int fd;
        memcpy(&fd, CMSG_DATA(h), sizeof fd);
        if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC)) _exit(3);
        write(fd, "through a passed pipe", 21);
        _exit(0);
    }
    close(sv[1]);
    printf("sendmsg rights: %d\n", send_fd(sv[0], p[1], "pipe"));
    close(p[1]);
    char buf[64];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("parent read: %s\n", buf);
    int status;
    waitpid(pid, &status, 0);
    printf("child exit=%d\n", WEXITSTATUS(status));
    n = read(p[0], buf, sizeof buf);
    printf("pipe eof=%zd\n", n);
    close(p[0]);
    close(sv[0]);

    /* Short control buffer: MSG_CTRUNC, the descriptor is closed. */
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
    pipe(p);
    send_fd(sv[0], p[1], "d");
    close(p[1]);
    char c[sizeof(struct cmsghdr)];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = msg1(&iov, c, sizeof c);
    n = recvmsg(sv[1], &m, 0);
    printf("short control: n=%zd ctrunc=%d controllen=%zu\n", n, (m.msg_flags & MSG_CTRUNC) != 0,
           (size_t)m.msg_controllen);
    printf("dropped fd closed: eof=%zd\n", read(p[0], buf, sizeof buf));
    close(p[0]);

    /* Never received: closed when the receiving socket goes. */
    pipe(p);
    send_fd(sv[0], p[1], "e");
    close(p[1]);
    close(sv[1]);
    close(sv[0]);
    printf("unreceived fd closed: eof=%zd\n", read(p[0], buf, sizeof buf));
    close(p[0]);

    /* Bad descriptors and bad lengths. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    printf("pass bad fd: %s\n", ERR(send_fd(sv[0], 999, "x")));
    char big[CMSG_SPACE(sizeof(int))];
    memset(big, 0, sizeof big);
    struct iovec biov = {"x", 1};
    struct msghdr bm = msg1(&biov, big, sizeof big);
    struct cmsghdr *h = CMSG_FIRSTHDR(&bm);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = sizeof big + 64;
    printf("cmsg too long: %s\n", ERR(sendmsg(sv[0], &bm, 0)));
    bm.msg_iovlen = 100000;
    printf("iovlen too big: %s\n", ERR(sendmsg(sv[0], &bm, 0)));

    /* SCM_CREDENTIALS with SO_PASSCRED. */
    int one = 1;
    setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    send(sv[0], "cred", 4, 0);
    char cc[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec ci = {buf, sizeof buf};
    struct msghdr cm = msg1(&ci, cc, sizeof cc);
    n = recvmsg(sv[1], &cm, 0);
    h = CMSG_FIRSTHDR(&cm);
    struct ucred u = {0};
    if (h && h->cmsg_type == SCM_CREDENTIALS) memcpy(&u, CMSG_DATA(h), sizeof u);
    printf("credentials: n=%zd type=%d pid=%d uid=%d\n", n, h ? h->cmsg_type : -1, u.pid == getpid(),
           u.uid == getuid());
    close(sv[0]);
    close(sv[1]);
}

/* What poll sees of closed, shut down and fresh sockets. */
static void poll_states(void) {
    int sv[2];
    struct pollfd p = {0, POLLIN | POLLOUT | POLLRDHUP, 0};
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    close(sv[1]);
    p.fd = sv[0];
    poll(&p, 1, 0);
    printf("poll peer closed: %#x\n", p.revents);
    close(sv[0]);
    for (int how = 0; how < 2; how++) {
        for (int own = 0; own < 2; own++) {
            socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
            shutdown(sv[own ? 0 : 1], how ? SHUT_WR : SHUT_RD);
            p.fd = sv[0];
            poll(&p, 1, 0);
            printf("poll %s shut %s: %#x\n", own ? "own" : "peer", how ? "wr" : "rd", p.revents);
            close(sv[0]);
            close(sv[1]);
        }
    }
    /* Closed with input unread: the peer reads what is left, then a reset. */
    char b[8];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    send(sv[0], "x", 1, 0);
    send(sv[1], "y", 1, 0);
    close(sv[1]);
    p.fd = sv[0];
    poll(&p, 1, 0);
    printf("reset poll: %#x\n", p.revents);
    printf("reset recv data: %s\n", ERR(recv(sv[0], b, sizeof b, 0)));
    printf("reset recv: %s\n", ERR(recv(sv[0], b, sizeof b, 0)));
    printf("reset recv again: %s\n", ERR(recv(sv[0], b, sizeof b, 0)));
    printf("reset send: %s\n", ERR(send(sv[0], "x", 1, MSG_NOSIGNAL)));
    close(sv[0]);
    int kinds[][2] = {{AF_UNIX, SOCK_STREAM}, {AF_INET, SOCK_STREAM}, {AF_UNIX, SOCK_DGRAM}, {AF_INET, SOCK_DGRAM}};
    for (int k = 0; k < 4; k++) {
        p.fd = socket(kinds[k][0], kinds[k][1], 0);
        poll(&p, 1, 0);
        printf("poll fresh %d/%d: %#x\n", kinds[k][0], kinds[k][1], p.revents);
        close(p.fd);
    }
}

static void pair_types(void) {
    int sv[2];
    printf("seqpacket pair: %s\n", ERR(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv)));
    send(sv[0], "one", 3, 0);
    send(sv[0], "two!", 4, 0);
    char buf[16];
    ssize_t a = recv(sv[1], buf, sizeof buf, 0);
    ssize_t b = recv(sv[1], buf, sizeof buf, 0);
    printf("seqpacket boundaries: %zd %zd\n", a, b);
    close(sv[0]);
    printf("seqpacket eof: %zd\n", recv(sv[1], buf, sizeof buf, 0));
    close(sv[1]);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
    send(sv[0], "0123456789", 10, 0);
    struct iovec iov = {buf, 4};
    struct msghdr m = msg1(&iov, NULL, 0);
    printf("dgram recvmsg: %zd trunc=%d\n", recvmsg(sv[1], &m, 0), (m.msg_flags & MSG_TRUNC) != 0);
    close(sv[0]);
    close(sv[1]);
}

/* A reader that keeps up with a writer on a stream that never empties:
 * 100 MB go through a 64 MiB sandbox. */
static void long_stream(void) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
    static char b[1000];
    long in = 0, out = 0;
    for (int i = 0; i < 100000; i++) {
        ssize_t w = write(sv[0], b, sizeof b);
        if (w > 0) in += w;
        if (i >= 100) {
            ssize_t r = read(sv[1], b, sizeof b);
            if (r > 0) out += r;
        }
    }
    ssize_t r;
    while ((r = read(sv[1], b, sizeof b)) > 0) out += r;
    printf("long stream: same=%d over 90 MB=%d\n", in == out, in > 90000000);
    close(sv[0]);
    close(sv[1]);
}

static void tcp(int family) {
    const char *tag = family == AF_INET ? "tcp4" : "tcp6";
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    }
    int l = socket(family, SOCK_STREAM, 0);
    int one = 1;
    printf("%s reuseaddr: %s\n", tag, ERR(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one)));
    int v = 0;
    socklen_t vl = sizeof v;
    getsockopt(l, SOL_SOCKET, SO_REUSEADDR, &v, &vl);
    printf("%s reuseaddr get=%d\n", tag, v);
    printf("%s bind: %s\n", tag, ERR(bind(l, (struct sockaddr *)&ss, sl)));
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    getsockname(l, (struct sockaddr *)&got, &gl);
    int port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port : ((struct sockaddr_in6 *)&got)->sin6_port);
    printf("%s ephemeral port=%d len=%d\n", tag, port >= 1024, (int)gl);
    if (family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    int l2 = socket(family, SOCK_STREAM, 0);
    printf("%s bind taken: %s\n", tag, ERR(bind(l2, (struct sockaddr *)&ss, sl)));
    close(l2);
    int c = socket(family, SOCK_STREAM, 0);
    printf("%s connect before listen: %s\n", tag, ERR(connect(c, (struct sockaddr *)&ss, sl)));
    close(c);
    printf("%s listen: %s\n", tag, ERR(listen(l, 16)));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(family, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&ss, sl) != 0) _exit(2);
        int on = 1;
        if (setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0) _exit(3);
        struct sockaddr_storage p;
        socklen_t pl = sizeof p;
        getpeername(s, (struct sockaddr *)&p, &pl);
        if (pl != sl || memcmp(&p, &ss, sl) != 0) _exit(4);
        const char *msg = "hello over loopback";
        send(s, msg, strlen(msg), 0);
        char back[64];
        int got_ = 0, n;
        while (got_ < (int)strlen(msg) && (n = recv(s, back + got_, sizeof back - 1 - got_, 0)) > 0) got_ += n;
        back[got_] = 0;
        printf("%s client got: %s\n", tag, back);
        fflush(stdout);
        close(s);
        _exit(0);
    }
    struct epoll_event out;
    printf("%s epoll listener: %d\n", tag, epoll_wait(ep, &out, 1, 5000));
    close(ep);
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    int s = accept(l, (struct sockaddr *)&peer, &pl);
    printf("%s accepted=%d peer family=%d len=%d\n", tag, s >= 0, peer.ss_family == family, pl == sl);
    char buf[64];
    int n;
    while ((n = recv(s, buf, sizeof buf, 0)) > 0) {
        send(s, buf, n, 0);
    }
    printf("%s server eof=%d\n", tag, n);
    int status;
    waitpid(pid, &status, 0);
    printf("%s client exit=%d\n", tag, WEXITSTATUS(status));
    printf("%s send after peer closed: %s\n", tag, ERR(send(s, "x", 1, MSG_NOSIGNAL)));
    struct ucred tc;
    socklen_t tcl = sizeof tc;
    printf("%s peercred: %s pid=%d\n", tag, ERR(getsockopt(s, SOL_SOCKET, SO_PEERCRED, &tc, &tcl)), tc.pid);
    close(s);

    /* What poll sees of a TCP connection as its ends shut down. */
    for (int k = 0; k < 6; k++) {
        static const char *what[] = {"peer closed", "peer shut wr", "own shut wr", "both shut wr", "after reset",
                                     "closed unread"};
        c = socket(family, SOCK_STREAM, 0);
        connect(c, (struct sockaddr *)&ss, sl);
        s = accept(l, NULL, NULL);
        if (k == 0 || k == 4) close(s);
        if (k == 1 || k == 3) shutdown(s, SHUT_WR);
        if (k == 2 || k == 3) shutdown(c, SHUT_WR);
        if (k == 4) send(c, "x", 1, MSG_NOSIGNAL);
        if (k == 5) {
            send(c, "x", 1, 0);
            usleep(20000);
            close(s);
        }
        usleep(20000); /* lets Linux's loopback deliver the FIN or reset */
        struct pollfd pf = {c, POLLIN | POLLOUT | POLLRDHUP, 0};
        poll(&pf, 1, 0);
        printf("%s poll %s: %#x\n", tag, what[k], pf.revents);
        if (k == 5) {
            char b[4];
            printf("%s recv after reset: %s\n", tag, ERR(recv(c, b, sizeof b, 0)));
            printf("%s recv then: %s\n", tag, ERR(recv(c, b, sizeof b, 0)));
            printf("%s send then: %s\n", tag, ERR(send(c, "x", 1, MSG_NOSIGNAL)));
        }
        close(c);
        if (k != 0 && k != 4 && k != 5) close(s);
    }

    /* Non-blocking connect: in progress, then writable with no error. */
    c = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    printf("%s nonblocking connect: %s\n", tag, ERR(connect(c, (struct sockaddr *)&ss, sl)));
    struct pollfd pf = {c, POLLOUT, 0};
    poll(&pf, 1, 5000);
    v = -1;
    vl = sizeof v;
    getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &vl);
    printf("%s writable=%d so_error=%d\n", tag, (pf.revents & POLLOUT) != 0, v);
    printf("%s connect again: %s\n", tag, ERR(connect(c, (struct sockaddr *)&ss, sl)));
    s = accept(l, NULL, NULL);
    close(s);
    close(c);
    close(l);
    c = socket(family, SOCK_STREAM, 0);
    printf("%s connect closed port: %s\n", tag, ERR(connect(c, (struct sockaddr *)&ss, sl)));
    printf("%s recv unconnected: %s\n", tag, ERR(recv(c, buf, 1, 0)));
    close(c);
}

static void udp(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = socket(AF_INET, SOCK_DGRAM, 0);
    printf("udp bind: %s\n", ERR(bind(r, (struct sockaddr *)&a, sizeof a)));
    socklen_t al = sizeof a;
    getsockname(r, (struct sockaddr *)&a, &al);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    printf("udp send no address: %s\n", ERR(send(s, "x", 1, 0)));
    printf("udp sendto: %zd\n", sendto(s, "datagram", 8, 0, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &ml);
    char buf[64];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(r, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    printf("udp recvfrom=%zd from port same=%d loopback=%d len=%d\n", n, from.sin_port == me.sin_port,
           from.sin_addr.s_addr == htonl(INADDR_LOOPBACK), (int)fl);
    sendto(r, "reply", 5, 0, (struct sockaddr *)&from, fl);
    n = recv(s, buf, sizeof buf, 0);
    printf("udp reply=%zd\n", n);
    close(r);
    /* Connected to a port nobody has: the next call is refused. */
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    printf("udp connect: %s\n", ERR(connect(c, (struct sockaddr *)&a, sizeof a)));
    printf("udp send to nobody: %s\n", ERR(send(c, "x", 1, 0)));
    printf("udp then recv: %s\n", ERR(recv(c, buf, sizeof buf, MSG_DONTWAIT)));
    printf("udp then recv again: %s\n", ERR(recv(c, buf, sizeof buf, MSG_DONTWAIT)));
    printf("udp unconnected sendto nobody: %s\n", ERR(sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a)));
    close(c);
    close(s);
}

/* Hostile lengths and pointers: the errors Linux gives. */
static void bounds(void) {
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a;
    memset(&a, 'a', sizeof a);
    a.sun_family = AF_UNIX;
    printf("addrlen 129: %s\n", ERR(bind(s, (struct sockaddr *)&a, 129)));
    printf("addrlen -1: %s\n", ERR(bind(s, (struct sockaddr *)&a, (socklen_t)-1)));
    printf("addr unmapped: %s\n", ERR(bind(s, (struct sockaddr *)8, 16)));
    printf("path without NUL: %s\n", ERR(connect(s, (struct sockaddr *)&a, sizeof a)));
    socklen_t neg = (socklen_t)-1;
    printf("getsockname len -1: %s\n", ERR(getsockname(s, (struct sockaddr *)&a, &neg)));
    printf("getsockname len unmapped: %s\n", ERR(getsockname(s, (struct sockaddr *)&a, (socklen_t *)8)));
    int v = 0;
    printf("getsockopt len -1: %s\n", ERR(getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &neg)));
    printf("setsockopt short: %s\n", ERR(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, 2)));
    v = 65536;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    socklen_t vl = sizeof v;
    getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &vl);
    printf("rcvbuf doubled=%d\n", v == 131072);
    struct ucred cr;
    vl = sizeof cr;
    getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &vl);
    printf("peercred unconnected: pid=%d uid=%d\n", cr.pid, (int)cr.uid);
    printf("shutdown how 5: %s\n", ERR(shutdown(s, 5)));
    printf("accept4 dgram: %s\n", ERR(accept4(s, NULL, NULL, 0x1234)));
    printf("socket bad flags: %s\n", ERR(socket(AF_UNIX, SOCK_STREAM | 0x100, 0)));
    printf("socket bad type: %s\n", ERR(socket(AF_UNIX, 9, 0)));
    int sv[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
    char buf[8];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = msg1(&iov, buf, 1 << 30);
    /* Linux says ENOMEM (older kernels ENOBUFS). */
    int r = sendmsg(sv[0], &m, 0);
    printf("controllen 1 GiB refused: %d\n", r < 0 && (errno == ENOMEM || errno == ENOBUFS));
    m.msg_controllen = 0;
    m.msg_iovlen = 2000;
    printf("recvmsg iovlen 2000: %s\n", ERR(recvmsg(sv[1], &m, MSG_DONTWAIT)));
    printf("send unmapped: %s\n", ERR(send(sv[0], (void *)8, 1 << 20, 0)));
    send(sv[0], "x", 1, 0);
    printf("recv unmapped: %s\n", ERR(recv(sv[1], (void *)8, 16, 0)));
    struct mmsghdr mm[4];
    memset(mm, 0, sizeof mm);
    struct iovec iv[4];
    char bufs[4][8];
    for (int i = 0; i < 4; i++) {
        iv[i].iov_base = bufs[i];
        iv[i].iov_len = 8;
        mm[i].msg_hdr.msg_iov = &iv[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    printf("sendmmsg: %d\n", sendmmsg(sv[0], mm, 3, 0));
    int got = recvmmsg(sv[1], mm, 4, MSG_WAITFORONE, NULL);
    printf("recvmmsg: %d len=%u\n", got, mm[0].msg_len);
    struct timeval tv = {0, 50000};
    printf("rcvtimeo set: %s\n", ERR(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
    printf("rcvtimeo recv: %s\n", ERR(recv(sv[1], bufs[0], 8, 0)));
    struct timeval g = {0};
    socklen_t tl = sizeof g;
    getsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &g, &tl);
    printf("rcvtimeo get: %d len=%d\n", g.tv_sec == 0 && g.tv_usec > 0, (int)tl);
    tv.tv_usec = 1000000;
    printf("rcvtimeo bad: %s\n", ERR(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
    close(sv[0]);
    close(sv[1]);
    close(s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    unix_stream();
    abstract_dgram();
    rights();
    pair_types();
    poll_states();
    long_stream();
    tcp(AF_INET);
    tcp(AF_INET6);
    udp();
    bounds();
    printf("inet socketpair: %s\n", ERR(socketpair(AF_INET, SOCK_STREAM, 0, (int[2]){0, 0})));
    printf("done\n");
    return 0;
}
