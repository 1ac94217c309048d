/* Two threads take turns on a mutex-protected counter (a contended lock
 * hand-off): each waits until it is its turn, so every increment hands
 * the lock to the other thread. argv[1]: hand-offs (default 2000). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static long turn, total;

static void *player(void *arg) {
    long me = (long)arg;
    for (;;) {
        pthread_mutex_lock(&m);
        while (turn % 2 != me && turn < total) pthread_cond_wait(&c, &m);
        if (turn >= total) {
            pthread_cond_broadcast(&c);
            pthread_mutex_unlock(&m);
            return NULL;
        }
        turn++;
        pthread_cond_broadcast(&c);
        pthread_mutex_unlock(&m);
    }
}

int main(int argc, char **argv) {
    total = argc > 1 ? atol(argv[1]) : 2000;
    pthread_t a, b;
    pthread_create(&a, NULL, player, (void *)0);
    pthread_create(&b, NULL, player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("%ld hand-offs\n", turn);
    return 0;
}
