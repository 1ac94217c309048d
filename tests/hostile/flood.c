/* Floods stdout and stderr at the same time: argv[1] KiB to each, in
 * alternating writes of argv[2] bytes. Every write must be accepted in
 * full (output past the cap is dropped by the host, not refused); prints
 * nothing else and exits 0, or 3 on a short or failed write. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[1 << 20];

int main(int argc, char **argv) {
    long kib = argc > 1 ? atol(argv[1]) : 16384;
    long size = argc > 2 ? atol(argv[2]) : 65536;
    if (size < 1 || size > (long)sizeof buf) return 2;
    long total = kib << 10;
    for (long done = 0; done < total; done += size) {
        long n = total - done < size ? total - done : size;
        memset(buf, 'o', n);
        if (write(1, buf, n) != n) return 3;
        memset(buf, 'e', n);
        if (write(2, buf, n) != n) return 3;
    }
    return 0;
}
