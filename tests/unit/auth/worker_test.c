/*
 * worker_test: the hash thread pool: every job's work runs off the loop
 * thread and its done runs on it, exactly once; a full pool refuses jobs;
 * destroying the pool hands back jobs not yet delivered. Also the real use:
 * login checks through the pool answer as the direct path does.
 */
#include "auth_fixture.h"
#include "auth_worker.h"
#include "core/loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define WAIT_LIMIT_MS 10000

typedef struct job {
    pthread_t loop_thread;
    pthread_t work_thread;
    int worked;
    int done_count;
    int completed;
    atomic_int *gate; /* when set, work waits until it is 1 */
    int *finished;    /* shared count of done calls */
    int stop_at;      /* stop the loop when *finished reaches this */
    loop_t *loop;
} job_t;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void job_work(void *arg)
{
    job_t *j = arg;
    j->work_thread = pthread_self();
    if (j->gate)
        while (atomic_load(j->gate) == 0)
            sleep_ms(1);
    j->worked = 1;
}

static void job_done(void *arg, int completed)
{
    job_t *j = arg;
    assert_true(pthread_equal(pthread_self(), j->loop_thread));
    j->done_count++;
    j->completed = completed;
    if (j->finished && ++*j->finished == j->stop_at)
        loop_stop(j->loop);
}

static void on_deadline(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Run the loop until stopped or the safety deadline passes. */
static void run_loop(loop_t *loop)
{
    loop_timer_t deadline;
    loop_timer_init(&deadline, on_deadline, NULL);
    loop_timer_start(loop, &deadline, WAIT_LIMIT_MS);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_stop(loop, &deadline);
}

static void test_jobs_run_off_loop(void **state)
{
    (void)state;
    enum { N = 40 };
    loop_t *loop = loop_new();
    auth_worker_t *w = auth_worker_new(loop, 4, 100);
    assert_non_null(w);
    job_t jobs[N];
    int finished = 0;
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < N; i++) {
        jobs[i].loop_thread = pthread_self();
        jobs[i].finished = &finished;
        jobs[i].stop_at = N;
        jobs[i].loop = loop;
        assert_int_equal(auth_worker_submit(w, job_work, job_done, &jobs[i]), 0);
    }
    assert_int_equal(auth_worker_pending(w), N);
    run_loop(loop);
    assert_int_equal(finished, N);
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].worked);
        assert_int_equal(jobs[i].done_count, 1);
        assert_int_equal(jobs[i].completed, 1);
        assert_false(pthread_equal(jobs[i].work_thread, pthread_self()));
    }
    assert_int_equal(auth_worker_pending(w), 0);
    auth_worker_destroy(&w);
    assert_null(w);
    auth_worker_destroy(&w); /* safe twice */
    loop_destroy(&loop);
}

static void test_full_pool_refuses(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    auth_worker_t *w = auth_worker_new(loop, 1, 2);
    atomic_int gate = 0;
    int finished = 0;
    job_t a = {.loop_thread = pthread_self(),
               .gate = &gate,
               .finished = &finished,
               .stop_at = 2,
               .loop = loop};
    job_t b = a, c = a;
    assert_int_equal(auth_worker_submit(w, job_work, job_done, &a), 0);
    assert_int_equal(auth_worker_submit(w, job_work, job_done, &b), 0);
    assert_int_equal(auth_worker_submit(w, job_work, job_done, &c), -1);
    assert_int_equal(auth_worker_pending(w), 2);
    atomic_store(&gate, 1);
    run_loop(loop);
    assert_int_equal(finished, 2);
    assert_int_equal(c.done_count, 0); /* a refused job is never called back */
    /* room again */
    assert_int_equal(auth_worker_submit(w, job_work, job_done, &c), 0);
    c.stop_at = 3;
    run_loop(loop);
    assert_int_equal(c.done_count, 1);
    auth_worker_destroy(&w);
    loop_destroy(&loop);
}

static void test_destroy_hands_back_jobs(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    auth_worker_t *w = auth_worker_new(loop, 1, 10);
    atomic_int gate = 1;
    job_t jobs[5];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 5; i++) {
        jobs[i].loop_thread = pthread_self();
        jobs[i].gate = &gate;
        assert_int_equal(auth_worker_submit(w, job_work, job_done, &jobs[i]), 0);
    }
    /* give the thread time to finish some; none is delivered: the loop never ran */
    sleep_ms(50);
    auth_worker_destroy(&w);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(jobs[i].done_count, 1);
        assert_int_equal(jobs[i].completed, 0);
    }
    loop_destroy(&loop);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    assert_null(auth_worker_new(loop, 0, 10));
    assert_null(auth_worker_new(loop, AUTH_WORKER_THREADS_MAX + 1, 10));
    assert_null(auth_worker_new(loop, 1, 0));
    loop_destroy(&loop);
}

/* ---- logins through the pool ---- */

typedef struct login_job {
    fixture_t *f;
    auth_verify_t *v;
    PB(AuthLoginVerifyReply) * reply;
    int *finished;
    int stop_at;
    loop_t *loop;
} login_job_t;

static void login_work(void *arg)
{
    login_job_t *j = arg;
    auth_verify_run(j->v);
}

static void login_done(void *arg, int completed)
{
    login_job_t *j = arg;
    assert_true(completed);
    j->reply = auth_api_verify_finish(j->f->api, &j->v);
    if (++*j->finished == j->stop_at)
        loop_stop(j->loop);
}

static void test_logins_through_pool(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_cred(f, "app", "correct-password", "acme", NULL, 0);
    static const char *const secrets[] = {"correct-password", "wrong-password", "correct-password",
                                          "nope-nope-nope"};
    static const char *const users[] = {"app", "app", "ghost", "app"};
    enum { N = 4 };
    loop_t *loop = loop_new();
    auth_worker_t *w = auth_worker_new(loop, 2, 10);
    login_job_t jobs[N];
    int finished = 0;
    for (int i = 0; i < N; i++) {
        PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
        req.username = (char *)users[i];
        req.secret.data = (uint8_t *)secrets[i];
        req.secret.len = strlen(secrets[i]);
        PB(AuthLoginVerifyReply) *early = NULL;
        jobs[i] = (login_job_t){.f = f, .finished = &finished, .stop_at = N, .loop = loop};
        jobs[i].v = auth_api_verify_begin(f->api, &req, &early);
        assert_non_null(jobs[i].v); /* nothing cached yet: every one needs a hash */
        assert_int_equal(auth_worker_submit(w, login_work, login_done, &jobs[i]), 0);
    }
    run_loop(loop);
    assert_int_equal(finished, N);
    const int expect_ok[N] = {1, 0, 0, 0};
    for (int i = 0; i < N; i++) {
        assert_non_null(jobs[i].reply);
        assert_int_equal(jobs[i].reply->ok, expect_ok[i]);
        assert_int_equal(jobs[i].reply->status->code, expect_ok[i] ? 235 : 535);
        auth_api_reply_free(jobs[i].reply);
    }
    /* the pool's success went into the cache */
    assert_true(fx_login_ok(f, "app", "correct-password"));
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_hits, 1);
    auth_worker_destroy(&w);
    loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_off_loop),
        cmocka_unit_test(test_full_pool_refuses),
        cmocka_unit_test(test_destroy_hands_back_jobs),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test_setup_teardown(test_logins_through_pool, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
