#include <stdio.h>
/* Prints a line, then writes through a null pointer. */
int main(void) {
    puts("before the fault");
    fflush(stdout);
    *(volatile int *)0 = 42;
    puts("after the fault");
    return 0;
}
