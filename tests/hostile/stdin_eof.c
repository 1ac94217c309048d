/* Reads all of stdin, then keeps reading past its end: every read after
 * EOF must return 0. Also reads into a buffer smaller than the count asked
 * for when only a little input is left. Prints what it saw; exits 0. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    static char buf[65536];
    long total = 0, n;
    while ((n = read(0, buf, sizeof buf)) > 0) total += n;
    long zeros = 0, other = 0;
    for (int i = 0; i < 10000; i++) {
        n = read(0, buf, i % 2 ? sizeof buf : 1);
        if (n == 0)
            zeros++;
        else
            other++;
    }
    /* A zero-length read at EOF is 0 too. */
    n = read(0, buf, 0);
    printf("total=%ld zeros=%ld other=%ld zero_len=%ld\n", total, zeros, other, n);
    return 0;
}
