#include <unistd.h>
/* Copies stdin to stdout with raw read/write, counting bytes on stderr. */
int main(void) {
    char buf[4096];
    long total = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) return 2;
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(1, buf + off, n - off);
            if (w <= 0) return 3;
            off += w;
        }
        total += n;
    }
    char msg[32];
    int len = 0;
    char digits[24];
    int d = 0;
    do { digits[d++] = '0' + total % 10; total /= 10; } while (total);
    while (d) msg[len++] = digits[--d];
    msg[len++] = '\n';
    write(2, msg, len);
    return 0;
}
