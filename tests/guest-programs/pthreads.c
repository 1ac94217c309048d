/* POSIX threads: four workers add to a mutex-protected counter, a
 * condition variable orders a producer and a consumer, and join returns
 * the workers' results. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#define WORKERS 4
#define ROUNDS 100000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static long counter;
static int slot = -1; /* -1: empty */
static int done;

static void *worker(void *arg) {
    intptr_t id = (intptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    return (void *)(id * 10);
}

static void *consumer(void *arg) {
    (void)arg;
    long sum = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (slot < 0 && !done) pthread_cond_wait(&ready, &lock);
        if (slot >= 0) {
            sum += slot;
            slot = -1;
            pthread_cond_broadcast(&ready);
        } else if (done) {
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return (void *)sum;
}

int main(void) {
    pthread_t t[WORKERS], c;
    for (intptr_t i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0) return 1;
    if (pthread_create(&c, NULL, consumer, NULL) != 0) return 1;
    for (int v = 1; v <= 100; v++) {
        pthread_mutex_lock(&lock);
        while (slot >= 0) pthread_cond_wait(&ready, &lock);
        slot = v;
        pthread_cond_broadcast(&ready);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    while (slot >= 0) pthread_cond_wait(&ready, &lock);
    done = 1;
    pthread_cond_broadcast(&ready);
    pthread_mutex_unlock(&lock);

    long results = 0;
    for (int i = 0; i < WORKERS; i++) {
        void *r;
        pthread_join(t[i], &r);
        results += (long)(intptr_t)r;
    }
    void *sum;
    pthread_join(c, &sum);
    printf("counter=%ld\n", counter);
    printf("joined=%ld\n", results);
    printf("consumed=%ld\n", (long)(intptr_t)sum);
    return 0;
}
