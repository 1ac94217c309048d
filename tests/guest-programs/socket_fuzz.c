/* Hostile socket calls: many socket system calls whose arguments are
 * mostly well formed (addresses of every family, message headers with
 * buffers and SCM_RIGHTS, options) and then corrupted: random lengths,
 * flags and bytes, unmapped and kernel addresses, huge numbers. Whatever
 * the calls return, the program must keep running: an interval timer
 * interrupts any call that would wait for ever. Prints how many calls it
 * made and how many kinds of call succeeded at least once. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static uint64_t state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static unsigned char buf[8192];
static int fds[32];
static int nfds;

static void on_alrm(int sig) { (void)sig; }

static long fd_arg(void) { return rnd() % 8 ? fds[rnd() % nfds] : (long)(rnd() % 40) - 2; }

/* Something hostile in place of a length or pointer. */
static long hostile(void) {
    switch (rnd() % 6) {
    case 0: return -1;
    case 1: return (long)0xffff800000000000ull;
    case 2: return 8;
    case 3: return (long)rnd();
    case 4: return 1L << (rnd() % 63);
    default: return (long)(buf + sizeof buf - rnd() % 16);
    }
}

/* A socket address of some family at `p`; returns its length. */
static socklen_t addr_at(unsigned char *p) {
    memset(p, 0, 128);
    switch (rnd() % 5) {
    case 0: {
        struct sockaddr_un *a = (struct sockaddr_un *)p;
        a->sun_family = AF_UNIX;
        int n = snprintf(a->sun_path, sizeof a->sun_path, "/tmp/fz%d", (int)(rnd() % 4));
        return offsetof(struct sockaddr_un, sun_path) + n + 1;
    }
    case 1: {
        struct sockaddr_un *a = (struct sockaddr_un *)p;
        a->sun_family = AF_UNIX;
        int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "fz%d", (int)(rnd() % 4));
        return offsetof(struct sockaddr_un, sun_path) + 1 + n;
    }
    case 2: {
        struct sockaddr_in *a = (struct sockaddr_in *)p;
        a->sin_family = AF_INET;
        a->sin_port = htons(rnd() % 3 ? 40000 + rnd() % 4 : 0);
        a->sin_addr.s_addr = rnd() % 4 ? htonl(INADDR_LOOPBACK) : rnd() % 2 ? 0 : (uint32_t)rnd();
        return sizeof *a;
    }
    case 3: {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)p;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(rnd() % 3 ? 40000 + rnd() % 4 : 0);
        if (rnd() % 4) a->sin6_addr = in6addr_loopback;
        return sizeof *a;
    }
    default: {
        unsigned short fam = (unsigned short)(rnd() % 3 ? AF_UNSPEC : rnd());
        memcpy(p, &fam, 2);
        return rnd() % 130;
    }
    }
}

/* A message header at `h` with buffers and control data in the buffer. */
static void msghdr_at(struct msghdr *h, unsigned char *space) {
    memset(h, 0, sizeof *h);
    struct iovec *iov = (struct iovec *)space;
    int n = rnd() % 4;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = buf + 4096 + rnd() % 2048;
        iov[i].iov_len = rnd() % 512;
    }
    h->msg_iov = iov;
    h->msg_iovlen = n;
    if (rnd() % 2) {
        h->msg_name = space + 128;
        h->msg_namelen = addr_at(space + 128);
    }
    if (rnd() % 2) {
        unsigned char *c = space + 256;
        struct cmsghdr *cm = (struct cmsghdr *)c;
        int k = rnd() % 4;
        cm->cmsg_len = CMSG_LEN(k * sizeof(int));
        cm->cmsg_level = rnd() % 4 ? SOL_SOCKET : (int)rnd();
        cm->cmsg_type = rnd() % 3 ? SCM_RIGHTS : (int)(rnd() % 4);
        for (int i = 0; i < k; i++) {
            int fd = (int)fd_arg();
            memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof fd);
        }
        h->msg_control = c;
        h->msg_controllen = rnd() % 4 ? CMSG_SPACE(k * sizeof(int)) : rnd() % 300;
    }
    if (rnd() % 8 == 0) h->msg_iovlen = (size_t)hostile();
    if (rnd() % 8 == 0) h->msg_controllen = (size_t)hostile();
    if (rnd() % 8 == 0) h->msg_namelen = (socklen_t)hostile();
    if (rnd() % 8 == 0) h->msg_iov = (struct iovec *)hostile();
}

static long flags(void) {
    static const long f[] = {0, MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, MSG_WAITALL, MSG_NOSIGNAL, MSG_CMSG_CLOEXEC,
                             MSG_OOB, MSG_ERRQUEUE};
    return f[rnd() % 9] | f[rnd() % 9] | (rnd() % 16 == 0 ? (long)rnd() : 0);
}

static int ok[8];

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sigaction(SIGALRM, &sa, 0);
    signal(SIGPIPE, SIG_IGN);
    struct itimerval it = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, 0);
    int kinds[][2] = {{AF_UNIX, SOCK_STREAM}, {AF_UNIX, SOCK_DGRAM}, {AF_UNIX, SOCK_SEQPACKET},
                      {AF_INET, SOCK_STREAM}, {AF_INET, SOCK_DGRAM}, {AF_INET6, SOCK_STREAM},
                      {AF_INET6, SOCK_DGRAM}};
    for (unsigned k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        fds[nfds++] = socket(kinds[k][0], kinds[k][1] | SOCK_NONBLOCK, 0);
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
    fds[nfds++] = sv[0];
    fds[nfds++] = sv[1];
    int n = 0;
    for (int i = 0; i < 30000; i++) {
        long r = -1;
        unsigned char *a = buf + (rnd() % 8) * 256;
        socklen_t *lenp = (socklen_t *)(buf + 3000);
        *lenp = rnd() % 4 ? 128 : (socklen_t)rnd();
        int kind = rnd() % 8;
        switch (kind) {
        case 0: {
            int k = rnd() % 7;
            long ty = rnd() % 8 ? kinds[k][1] | SOCK_NONBLOCK : (long)rnd();
            r = syscall(SYS_socket, rnd() % 8 ? kinds[k][0] : (long)(rnd() % 64), ty, rnd() % 8 ? 0 : (long)rnd());
            if (r > 2) {
                if (nfds < 32) fds[nfds++] = (int)r;
                else {
                    int j = 9 + rnd() % 23;
                    close(fds[j]);
                    fds[j] = (int)r;
                }
            }
            break;
        }
        case 1: {
            socklen_t l = addr_at(a);
            r = syscall(rnd() % 2 ? SYS_bind : SYS_connect, fd_arg(), rnd() % 8 ? (long)a : hostile(),
                        rnd() % 8 ? (long)l : hostile());
            break;
        }
        case 2:
            r = syscall(SYS_listen, fd_arg(), rnd() % 8 ? (long)(rnd() % 8) : hostile());
            r = syscall(SYS_accept4, fd_arg(), rnd() % 2 ? (long)a : 0, rnd() % 8 ? (long)lenp : hostile(),
                        rnd() % 8 ? SOCK_NONBLOCK | (rnd() % 2 ? SOCK_CLOEXEC : 0) : (long)rnd());
            if (r > 2) {
                int j = 9 + rnd() % 23;
                if (j < nfds) close(fds[j]), fds[j] = (int)r;
                else close((int)r);
            }
            break;
        case 3: {
            socklen_t l = addr_at(a);
            long len = rnd() % 8 ? (long)(rnd() % 2048) : hostile();
            r = rnd() % 2 ? syscall(SYS_sendto, fd_arg(), (long)(buf + 4096), len, flags() | MSG_DONTWAIT,
                                    rnd() % 2 ? (long)a : 0, (long)l)
                          : syscall(SYS_recvfrom, fd_arg(), (long)(buf + 4096), len, flags() | MSG_DONTWAIT,
                                    rnd() % 2 ? (long)a : 0, rnd() % 2 ? (long)lenp : hostile());
            break;
        }
        case 4: {
            struct msghdr *h = (struct msghdr *)(buf + 2048);
            msghdr_at(h, buf + 2560);
            r = syscall(rnd() % 2 ? SYS_sendmsg : SYS_recvmsg, fd_arg(), rnd() % 8 ? (long)h : hostile(),
                        flags() | MSG_DONTWAIT);
            break;
        }
        case 5: {
            struct mmsghdr *m = (struct mmsghdr *)(buf + 1024);
            for (int j = 0; j < 3; j++) msghdr_at(&m[j].msg_hdr, buf + 2560 + j * 512);
            r = syscall(rnd() % 2 ? SYS_sendmmsg : SYS_recvmmsg, fd_arg(), (long)m,
                        rnd() % 8 ? (long)(rnd() % 4) : hostile(), flags() | MSG_DONTWAIT, 0);
            break;
        }
        case 6: {
            static const long levels[] = {SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP, IPPROTO_IPV6, IPPROTO_UDP};
            long level = rnd() % 8 ? levels[rnd() % 5] : (long)rnd();
            long name = rnd() % 8 ? (long)(rnd() % 60) : (long)rnd();
            *lenp = rnd() % 4 ? (socklen_t)(rnd() % 24) : (socklen_t)rnd();
            r = rnd() % 2 ? syscall(SYS_setsockopt, fd_arg(), level, name, (long)a, rnd() % 8 ? (long)(rnd() % 24) : hostile())
                          : syscall(SYS_getsockopt, fd_arg(), level, name, rnd() % 8 ? (long)a : hostile(),
                                    rnd() % 8 ? (long)lenp : hostile());
            break;
        }
        default:
            switch (rnd() % 5) {
            case 0: r = syscall(SYS_shutdown, fd_arg(), rnd() % 4); break;
            case 1: r = syscall(SYS_getsockname, fd_arg(), (long)a, rnd() % 8 ? (long)lenp : hostile()); break;
            case 2: r = syscall(SYS_getpeername, fd_arg(), (long)a, rnd() % 8 ? (long)lenp : hostile()); break;
            case 3: r = write(fds[rnd() % nfds], buf + 4096, rnd() % 300); break;
            default: r = read(fds[rnd() % nfds], buf + 4096, rnd() % 300); break;
            }
        }
        n++;
        if (r >= 0) ok[kind] = 1;
        /* Corrupt the buffer a little more each time. */
        for (int j = 0; j < 4; j++) buf[rnd() % 4096] = (unsigned char)rnd();
        /* Descriptors received through SCM_RIGHTS pile up: close them. */
        if (i % 256 == 0)
            for (int fd = 3; fd < 512; fd++) {
                int keep = 0;
                for (int j = 0; j < nfds; j++) keep |= fds[j] == fd;
                if (!keep) close(fd);
            }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    int kinds_ok = 0;
    for (int k = 0; k < 8; k++) kinds_ok += ok[k];
    printf("fuzz calls=%d kinds that succeeded=%d\n", n, kinds_ok);
    return 0;
}
