/* NETLINK_ROUTE as a program sees the loopback interface through it:
   getifaddrs and if_nameindex (both built on netlink dumps) list `lo`
   with 127.0.0.1/8 and ::1/128; a raw dump's replies carry the request's
   sequence number and the socket's port id and end in NLMSG_DONE; a
   change is refused (EPERM, as for an unprivileged process: run natively
   as root, it first becomes nobody). Only `lo` is printed, so a host with
   more interfaces prints the same. The interface ioctls (if_nametoindex,
   if_indextoname, SIOCGIF*) answer for `lo` as well. */
#include <sys/ioctl.h>
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The kernel's netlink structures (musl ships no kernel headers). */
struct sockaddr_nl {
    unsigned short nl_family, nl_pad;
    unsigned nl_pid, nl_groups;
};
struct nlmsghdr {
    unsigned nlmsg_len;
    unsigned short nlmsg_type, nlmsg_flags;
    unsigned nlmsg_seq, nlmsg_pid;
};
struct ifinfomsg {
    unsigned char ifi_family, pad;
    unsigned short ifi_type;
    int ifi_index;
    unsigned ifi_flags, ifi_change;
};
struct ifaddrmsg {
    unsigned char ifa_family, ifa_prefixlen, ifa_flags, ifa_scope;
    unsigned ifa_index;
};
struct rtattr {
    unsigned short rta_len, rta_type;
};
#define NETLINK_ROUTE 0
#define NLMSG_ERROR 2
#define NLMSG_DONE 3
#define NLM_F_REQUEST 0x1
#define NLM_F_ACK 0x4
#define NLM_F_DUMP 0x300
#define NLM_F_CREATE 0x400
#define RTM_NEWLINK 16
#define RTM_GETLINK 18
#define RTM_NEWADDR 20
#define IFLA_IFNAME 3
#define ALIGN4(n) (((n) + 3) & ~3)

static int prefix_of(struct sockaddr *mask, int family) {
    unsigned char *b = family == AF_INET ? (unsigned char *)&((struct sockaddr_in *)mask)->sin_addr
                                         : (unsigned char *)&((struct sockaddr_in6 *)mask)->sin6_addr;
    int n = 0, len = family == AF_INET ? 4 : 16;
    for (int i = 0; i < len; i++)
        for (int j = 7; j >= 0; j--) n += (b[i] >> j) & 1;
    return n;
}

int main(void) {
    if (getuid() == 0 && setuid(65534) != 0) return 1;
    struct ifaddrs *ifa;
    if (getifaddrs(&ifa) != 0) {
        printf("getifaddrs: %s\n", strerror(errno));
        return 0;
    }
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (strcmp(i->ifa_name, "lo") != 0 || !i->ifa_addr) continue;
        int fam = i->ifa_addr->sa_family;
        char buf[64] = "";
        if (fam == AF_INET) inet_ntop(fam, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof buf);
        if (fam == AF_INET6) inet_ntop(fam, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, buf, sizeof buf);
        if (fam == AF_INET || fam == AF_INET6)
            printf("getifaddrs: lo %s/%d up %d loopback %d\n", buf, prefix_of(i->ifa_netmask, fam),
                   !!(i->ifa_flags & IFF_UP), !!(i->ifa_flags & IFF_LOOPBACK));
        else
            printf("getifaddrs: lo family %d (link)\n", fam);
    }
    freeifaddrs(ifa);

    struct if_nameindex *ni = if_nameindex();
    for (struct if_nameindex *p = ni; p && p->if_index; p++)
        if (strcmp(p->if_name, "lo") == 0) printf("if_nameindex: %u %s\n", p->if_index, p->if_name);
    if_freenameindex(ni);

    /* A raw link dump. */
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct sockaddr_nl me = {.nl_family = AF_NETLINK};
    bind(fd, (struct sockaddr *)&me, sizeof me);
    socklen_t ml = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &ml);
    int mine = me.nl_pid == (unsigned)getpid();
    printf("bound: family %d, port id is mine %d\n", me.nl_family, mine);
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
    } req = {{sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 4242, 0}, {0}};
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent = sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel);
    printf("sendto: %zd\n", sent);
    char buf[16384];
    int done = 0, lo = 0, wrong = 0;
    while (!done) {
        struct sockaddr_nl from;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr msg = {&from, sizeof from, &iov, 1, 0, 0, 0};
        ssize_t n = recvmsg(fd, &msg, 0);
        if (n <= 0) break;
        if (from.nl_pid != 0) wrong++;
        for (ssize_t at = 0; at + 16 <= n;) {
            struct nlmsghdr *h = (void *)(buf + at);
            if (h->nlmsg_len < 16 || at + h->nlmsg_len > n) break;
            at += ALIGN4(h->nlmsg_len);
            if (h->nlmsg_seq != 4242 || h->nlmsg_pid != me.nl_pid) wrong++;
            if (h->nlmsg_type == NLMSG_DONE) done = 1;
            if (h->nlmsg_type != RTM_NEWLINK) continue;
            struct ifinfomsg *ifi = (void *)(h + 1);
            char *end = (char *)h + h->nlmsg_len;
            for (char *p = (char *)(ifi + 1); p + 4 <= end;) {
                struct rtattr *a = (void *)p;
                if (a->rta_len < 4 || p + a->rta_len > end) break;
                if (a->rta_type == IFLA_IFNAME && strcmp(p + 4, "lo") == 0) {
                    printf("dump: lo index %d loopback %d\n", ifi->ifi_index, !!(ifi->ifi_flags & IFF_LOOPBACK));
                    lo++;
                }
                p += ALIGN4(a->rta_len);
            }
        }
    }
    printf("dump: done %d, lo %d, wrong headers %d\n", done, lo, wrong);
    char one;
    ssize_t more = recv(fd, &one, 1, MSG_DONTWAIT);
    printf("nothing more: %zd %s\n", more, errno == EAGAIN ? "EAGAIN" : "?");

    /* A change: refused. */
    struct {
        struct nlmsghdr h;
        struct ifaddrmsg a;
    } add = {{sizeof add, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 5, 0}, {AF_INET, 8, 0, 0, 1}};
    send(fd, &add, sizeof add, 0);
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    struct nlmsghdr *h = (void *)buf;
    if (n > 0 && h->nlmsg_type == NLMSG_ERROR)
        printf("add an address: error %s\n", -*(int *)(h + 1) == EPERM ? "EPERM" : "other");
    close(fd);

    /* The interface ioctls. */
    printf("if_nametoindex lo: %u\n", if_nametoindex("lo"));
    unsigned none = if_nametoindex("nosuch0");
    printf("if_nametoindex nosuch0: %u %s\n", none, errno == ENODEV ? "ENODEV" : strerror(errno));
    char name[IF_NAMESIZE] = "";
    printf("if_indextoname 1: %s\n", if_indextoname(1, name) ? name : "none");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq r;
    memset(&r, 0, sizeof r);
    strcpy(r.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &r);
    printf("flags: up %d loopback %d running %d\n", !!(r.ifr_flags & IFF_UP), !!(r.ifr_flags & IFF_LOOPBACK),
           !!(r.ifr_flags & IFF_RUNNING));
    ioctl(s, SIOCGIFMTU, &r);
    printf("mtu: %d\n", r.ifr_mtu);
    ioctl(s, SIOCGIFADDR, &r);
    char ip[32];
    inet_ntop(AF_INET, &((struct sockaddr_in *)&r.ifr_addr)->sin_addr, ip, sizeof ip);
    printf("address: %s\n", ip);
    ioctl(s, SIOCGIFNETMASK, &r);
    inet_ntop(AF_INET, &((struct sockaddr_in *)&r.ifr_netmask)->sin_addr, ip, sizeof ip);
    printf("netmask: %s\n", ip);
    ioctl(s, SIOCGIFHWADDR, &r);
    printf("hardware address family: %d\n", r.ifr_hwaddr.sa_family);
    struct ifreq all[32];
    struct ifconf conf = {sizeof all, {(char *)all}};
    ioctl(s, SIOCGIFCONF, &conf);
    int found = 0;
    for (unsigned i = 0; i < conf.ifc_len / sizeof(struct ifreq); i++)
        if (strcmp(all[i].ifr_name, "lo") == 0) found++;
    printf("SIOCGIFCONF: lo %d\n", found);
    r.ifr_flags = 0;
    int set = ioctl(s, SIOCSIFFLAGS, &r);
    printf("SIOCSIFFLAGS: %d %s\n", set, errno == EPERM ? "EPERM" : strerror(errno));
    close(s);

    /* A second one. */
    int other = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    printf("a second route socket: %s\n", other >= 0 ? "ok" : strerror(errno));
    close(other);
    return 0;
}
