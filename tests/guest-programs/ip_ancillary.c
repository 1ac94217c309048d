/* IP datagrams' ancillary data and UDP-Lite, as Linux has them over
   loopback:
   - IPV6_RECVPKTINFO / IP_PKTINFO give where a datagram came in (its
     destination, `lo`);
   - IPV6_RECVHOPLIMIT / IPV6_RECVTCLASS give each datagram's hop limit
     and traffic class as sent: the sender's IPV6_UNICAST_HOPS and
     IPV6_TCLASS (64 and 0 by default), or a sendmsg control message;
     IPv4's IP_RECVTTL / IP_RECVTOS likewise (IP_TTL, IP_TOS);
   - a control buffer too short: MSG_CTRUNC, the message cut as Linux
     cuts it;
   - a bad value in a control message: EINVAL;
   - UDP-Lite sockets: their protocol, their coverage options, and ports
     apart from UDP's;
   - sethostname without CAP_SYS_ADMIN: EPERM.
   Run natively as nobody (a root run could change the host's name). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#define SOL_UDPLITE 136
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11

static const char *e(long r) {
    if (r >= 0) return "ok";
    return errno == EINVAL ? "EINVAL" : errno == EPERM ? "EPERM" : errno == EADDRINUSE ? "EADDRINUSE"
                                                                                         : strerror(errno);
}

/* A bound socket of `family` and protocol `proto` on loopback; its port. */
static int bound(int family, int proto, int port, int *got) {
    int s = socket(family, SOCK_DGRAM, proto);
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        if (bind(s, (struct sockaddr *)&a, sizeof a)) return -1;
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(s, (struct sockaddr *)&a, sizeof a)) return -1;
    }
    struct sockaddr_storage me;
    socklen_t len = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &len);
    *got = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&me)->sin6_port : ((struct sockaddr_in *)&me)->sin_port);
    return s;
}

static void to(int s, int family, int port) {
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        connect(s, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(s, (struct sockaddr *)&a, sizeof a);
    }
}

/* Sends "x" on s with control messages (level, type, int value) * n. */
static long send_with(int s, int n, const int *lvl, const int *ty, const int *val) {
    char ctl[256] = {0};
    struct iovec iov = {"x", 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = n ? ctl : 0, .msg_controllen = n ? CMSG_SPACE(sizeof(int)) * n : 0};
    struct cmsghdr *c = n ? CMSG_FIRSTHDR(&m) : 0;
    for (int i = 0; i < n; i++, c = CMSG_NXTHDR(&m, c)) {
        c->cmsg_level = lvl[i];
        c->cmsg_type = ty[i];
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &val[i], sizeof(int));
    }
    return sendmsg(s, &m, 0);
}

/* Receives one datagram with `room` bytes of control buffer; prints the
   control messages and the MSG_CTRUNC flag. */
static void show(const char *what, int s, size_t room) {
    char data[16], ctl[256];
    struct iovec iov = {data, sizeof data};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = room};
    long n = recvmsg(s, &m, 0);
    printf("%s: %ld bytes, ctrunc %d, controllen %zu:", what, n, !!(m.msg_flags & MSG_CTRUNC), (size_t)m.msg_controllen);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        size_t dlen = c->cmsg_len > CMSG_LEN(0) ? c->cmsg_len - CMSG_LEN(0) : 0;
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && dlen == sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo pi;
            char a[64];
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            printf(" pktinfo6 %s if %d", inet_ntop(AF_INET6, &pi.ipi6_addr, a, sizeof a), pi.ipi6_ifindex);
            continue;
        }
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && dlen == sizeof(struct in_pktinfo)) {
            struct in_pktinfo pi;
            char a[32], d[32];
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            inet_ntop(AF_INET, &pi.ipi_spec_dst, a, sizeof a);
            inet_ntop(AF_INET, &pi.ipi_addr, d, sizeof d);
            printf(" pktinfo if %d local %s dst %s", pi.ipi_ifindex, a, d);
            continue;
        }
        int v = 0;
        memcpy(&v, CMSG_DATA(c), dlen < sizeof v ? dlen : sizeof v);
        printf(" (%d,%d,len %zu)=%d", c->cmsg_level, c->cmsg_type, (size_t)c->cmsg_len, v);
    }
    printf("\n");
}

int main(void) {
    if (getuid() == 0 && setuid(65534) != 0) return 1;
    int on = 1, p;

    /* IPv6: hop limit and traffic class. */
    int r6 = bound(AF_INET6, 0, 0, &p);
    setsockopt(r6, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on);
    setsockopt(r6, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof on);
    int port6 = p;
    int s6 = bound(AF_INET6, 0, 0, &p);
    to(s6, AF_INET6, port6);
    send_with(s6, 0, 0, 0, 0);
    show("v6 default", r6, 256);
    int hops = 5, tclass = 0x20;
    setsockopt(s6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof hops);
    setsockopt(s6, IPPROTO_IPV6, IPV6_TCLASS, &tclass, sizeof tclass);
    send_with(s6, 0, 0, 0, 0);
    show("v6 socket options", r6, 256);
    int lv[2] = {IPPROTO_IPV6, IPPROTO_IPV6}, ty[2] = {IPV6_HOPLIMIT, IPV6_TCLASS}, val[2] = {7, 0x40};
    send_with(s6, 2, lv, ty, val);
    show("v6 control messages", r6, 256);
    int minus[2] = {-1, -1};
    send_with(s6, 2, lv, ty, minus);
    show("v6 control -1", r6, 256);
    int bad[1] = {256};
    printf("v6 hop limit 256: %s\n", e(send_with(s6, 1, lv, ty, bad)));
    for (size_t room = 0; room <= CMSG_SPACE(sizeof(int)) + CMSG_LEN(sizeof(int)); room += 7) {
        send_with(s6, 0, 0, 0, 0);
        char what[32];
        snprintf(what, sizeof what, "v6 room %zu", room);
        show(what, r6, room);
    }
    setsockopt(r6, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
    send_with(s6, 0, 0, 0, 0);
    show("v6 pktinfo", r6, 256);
    /* A dual-stack socket's IPv4 datagram: its destination IPv4-mapped. */
    int d6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
    bind(d6, (struct sockaddr *)&any6, sizeof any6);
    setsockopt(d6, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
    socklen_t dl = sizeof any6;
    getsockname(d6, (struct sockaddr *)&any6, &dl);
    int v4to6 = socket(AF_INET, SOCK_DGRAM, 0);
    to(v4to6, AF_INET, ntohs(any6.sin6_port));
    send(v4to6, "y", 1, 0);
    show("v6 from v4 pktinfo", d6, 256);
    int got = 0;
    socklen_t gl = sizeof got;
    getsockopt(s6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &got, &gl);
    printf("v6 unicast hops %d\n", got);

    /* IPv4: TTL and TOS. */
    int r4 = bound(AF_INET, 0, 0, &p);
    setsockopt(r4, IPPROTO_IP, IP_RECVTTL, &on, sizeof on);
    setsockopt(r4, IPPROTO_IP, IP_RECVTOS, &on, sizeof on);
    int port4 = p;
    int s4 = bound(AF_INET, 0, 0, &p);
    to(s4, AF_INET, port4);
    send_with(s4, 0, 0, 0, 0);
    show("v4 default", r4, 256);
    int ttl = 9, tos = 0x10;
    setsockopt(s4, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    setsockopt(s4, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    send_with(s4, 0, 0, 0, 0);
    show("v4 socket options", r4, 256);
    setsockopt(r4, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    send_with(s4, 0, 0, 0, 0);
    show("v4 pktinfo", r4, 256);
    setsockopt(r4, IPPROTO_IP, IP_PKTINFO, &(int){0}, sizeof(int));
    int lv4[1] = {IPPROTO_IP}, ty4[1] = {IP_TTL}, val4[1] = {3}, zero[1] = {0};
    send_with(s4, 1, lv4, ty4, val4);
    show("v4 control TTL", r4, 256);
    printf("v4 TTL 0: %s\n", e(send_with(s4, 1, lv4, ty4, zero)));

    /* UDP-Lite. */
    int l1 = bound(AF_INET, IPPROTO_UDPLITE, 0, &p);
    int litep = p;
    int proto = 0;
    socklen_t pl = sizeof proto;
    getsockopt(l1, SOL_SOCKET, SO_PROTOCOL, &proto, &pl);
    printf("udplite protocol %d\n", proto);
    int cov = 20;
    printf("set send coverage: %s\n", e(setsockopt(l1, SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof cov)));
    cov = 0;
    pl = sizeof cov;
    getsockopt(l1, SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, &pl);
    printf("send coverage %d\n", cov);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    printf("udp option at the udplite level: %s\n", e(setsockopt(u, SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof cov)));
    /* UDP's port space is apart: a UDP socket takes the same port. */
    int u2 = bound(AF_INET, 0, litep, &p);
    printf("udp bind to the udplite port: %s\n", e(u2));
    int l2 = bound(AF_INET, IPPROTO_UDPLITE, litep, &p);
    printf("second udplite bind to it: %s\n", e(l2));
    int l3 = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
    to(l3, AF_INET, litep);
    send(l3, "lite", 4, 0);
    char buf[8] = {0};
    long n = recv(l1, buf, sizeof buf, MSG_DONTWAIT);
    printf("udplite received %ld \"%s\"; udp socket has %ld\n", n, buf, (long)recv(u2, buf, sizeof buf, MSG_DONTWAIT));

    printf("sethostname: %s\n", e(sethostname("x", 1)));
    return 0;
}
