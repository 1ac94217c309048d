#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
/* Opens /dev/null until it fails; prints how many opens succeeded and why it stopped. */
int main(void) {
    int n = 0;
    while (open("/dev/null", O_RDONLY) >= 0) n++;
    printf("opened=%d error=%s\n", n, strerror(errno));
    return 0;
}
