/* A CPU-bound pthreads program: one thread per online CPU, each pinned to its CPU, hashes its
 * share of a counter range; the main thread combines the shares under a mutex. Prints the
 * combined hash (the same whatever the interleaving) and the CPUs the threads ran on.
 *
 *   threads [ROUNDS]     (default 2000000 per thread)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t combined;
static unsigned long rounds = 2000000;
static int ran_on[MAX_THREADS];

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *worker(void *arg)
{
    long id = (long)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(id, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
    uint64_t h = (uint64_t)id;
    for (unsigned long i = 0; i < rounds; i++)
        h = mix(h + i);
    ran_on[id] = sched_getcpu();
    pthread_mutex_lock(&lock);
    combined ^= h;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = strtoul(argv[1], NULL, 0);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1 || n > MAX_THREADS)
        n = 1;
    pthread_t threads[MAX_THREADS];
    for (long i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, worker, (void *)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    for (long i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    printf("threads: %ld, hash %016llx, ran on cpus", n, (unsigned long long)combined);
    for (long i = 0; i < n; i++)
        printf(" %d", ran_on[i]);
    printf("\n");
    return 0;
}
