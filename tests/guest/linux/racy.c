/* A race on purpose: an unsynchronised check-then-act. In each round, one thread per online
 * CPU (each pinned to its CPU) looks whether a slot is free and, if it is, prepares a little
 * and then takes it. Between the check and the act another thread can find the slot still
 * free: then two threads took it in one round. Prints how many rounds went wrong and the
 * first one (`RACE`), or `no race` when none did; the exit status is 1 after a race.
 *
 *   racy [ROUNDS]     (default 200)
 *
 * The rounds start together: thread 0 waits until every thread finished the last round, frees
 * the slot and raises `go`; the others spin on `go`. Under a fixed schedule of long turns, the
 * thread that takes the slot finishes the act long before its turn ends, so nothing goes
 * wrong; a schedule that ends a turn between check and act lets another thread in.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64

static volatile long go;        /* the round that may start */
static volatile long owner;     /* who took the slot this round (0: free) */
static long finished;           /* threads done with the current round (atomic) */
static long takers[10000];      /* threads that took the slot, per round (atomic) */
static volatile unsigned long prepared;
static long rounds = 200;
static long threads;

static void pin(long cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

/* Called by the thread that takes the slot when another already took it this round: where a
 * debugger stops to look back at who wrote `owner`. */
static void __attribute__((noinline)) collision(long round)
{
    asm volatile("" : : "r"(round) : "memory");
}

static void *worker(void *arg)
{
    long id = (long)arg;
    pin(id);
    for (long round = 1; round <= rounds; round++) {
        if (id == 0) {
            while (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) < threads * (round - 1))
                ;
            owner = 0;
            __atomic_store_n(&go, round, __ATOMIC_RELEASE);
        } else {
            while (__atomic_load_n(&go, __ATOMIC_ACQUIRE) < round)
                ;
        }
        if (owner == 0) {               /* check ... */
            unsigned long h = id;
            for (int i = 0; i < 16; i++) /* ... prepare ... */
                h = h * 6364136223846793005ul + 1442695040888963407ul;
            prepared = h;
            owner = id + 1;             /* ... act */
            if (__atomic_fetch_add(&takers[round - 1], 1, __ATOMIC_RELAXED) != 0)
                collision(round);
        }
        __atomic_fetch_add(&finished, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = strtol(argv[1], NULL, 0);
    if (rounds < 1 || rounds > 10000)
        rounds = 200;
    threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 2 || threads > MAX_THREADS) {
        printf("racy: needs 2 to %d CPUs\n", MAX_THREADS);
        return 2;
    }
    pthread_t t[MAX_THREADS];
    for (long i = 1; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0) {
            perror("pthread_create");
            return 2;
        }
    worker((void *)0);
    for (long i = 1; i < threads; i++)
        pthread_join(t[i], NULL);
    long bad = 0, first = 0;
    for (long r = 0; r < rounds; r++)
        if (takers[r] != 1 && bad++ == 0)
            first = r + 1;
    if (bad) {
        printf("RACE: %ld of %ld rounds had a slot taken twice, first round %ld\n", bad, rounds,
               first);
        return 1;
    }
    printf("no race in %ld rounds on %ld threads\n", rounds, threads);
    return 0;
}
