/*
 * store_test: the LMDB wrapper: persistence across reopen, put/get/del,
 * scans by prefix and from a start key, store_write commit and abort, map
 * growth from a small map, STORE_FULL at the ceiling with nothing partial
 * committed, reserve and stats, and the unsynced (nosync) store: its commits
 * survive the writer's crash and store_sync flushes them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"

typedef struct fx {
    char base[512];
    char dir[600];
    int n;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("SENDARIX_TEST_TMP");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    mkdir(tmp, 0700);
    snprintf(f->base, sizeof(f->base), "%s/store_test.XXXXXX", tmp);
    if (mkdtemp(f->base) == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/db", f->base);
    *state = f;
    return 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[1024];
            snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    remove_tree(f->base);
    free(f);
    return 0;
}

static store_t *open_store(fx_t *f, size_t map, size_t max, unsigned *dbi)
{
    store_opts_t o = {.map_size = map, .map_max = max};
    char err[256] = "";
    store_t *st = store_open(f->dir, &o, err, sizeof(err));
    if (st == NULL)
        fail_msg("store_open: %s", err);
    if (dbi)
        assert_int_equal(store_db(st, "main", dbi), STORE_OK);
    return st;
}

static int put_str(store_txn_t *t, unsigned dbi, const char *k, const char *v)
{
    return store_put(t, dbi, k, strlen(k), v, strlen(v));
}

static void check_value(store_t *st, unsigned dbi, const char *k, const char *v)
{
    store_txn_t *t = store_begin(st, 0);
    assert_non_null(t);
    store_val_t val;
    int rc = store_get(t, dbi, k, strlen(k), &val);
    if (v == NULL) {
        assert_int_equal(rc, STORE_NOTFOUND);
    } else {
        assert_int_equal(rc, STORE_OK);
        assert_int_equal(val.len, strlen(v));
        assert_memory_equal(val.data, v, val.len);
    }
    store_abort(&t);
}

static void test_put_get_del_and_reopen(void **state)
{
    fx_t *f = *state;
    unsigned dbi, meta;
    store_t *st = open_store(f, 0, 0, &dbi);
    assert_int_equal(store_db(st, "meta", &meta), STORE_OK);
    assert_true(dbi != meta);

    store_txn_t *t = store_begin(st, 1);
    assert_non_null(t);
    assert_int_equal(put_str(t, dbi, "msg:1", "first"), STORE_OK);
    assert_int_equal(put_str(t, dbi, "msg:2", "second"), STORE_OK);
    assert_int_equal(put_str(t, meta, "msg:1", "in another db"), STORE_OK);
    /* binary keys and values, with NULs */
    assert_int_equal(store_put(t, dbi, "\0k\0", 3, "\0v\0v", 4), STORE_OK);
    assert_int_equal(store_commit(&t), STORE_OK);
    assert_null(t);
    assert_int_equal(store_commit(&t), STORE_ERROR); /* a committed txn is gone */
    store_abort(&t);                                 /* and aborting it is harmless */

    check_value(st, dbi, "msg:1", "first");
    check_value(st, meta, "msg:1", "in another db");
    check_value(st, dbi, "msg:3", NULL);

    /* overwrite and delete */
    t = store_begin(st, 1);
    assert_int_equal(put_str(t, dbi, "msg:1", "changed"), STORE_OK);
    assert_int_equal(store_del(t, dbi, "msg:2", 5), STORE_OK);
    assert_int_equal(store_del(t, dbi, "msg:9", 5), STORE_NOTFOUND);
    assert_int_equal(store_commit(&t), STORE_OK);
    check_value(st, dbi, "msg:1", "changed");
    check_value(st, dbi, "msg:2", NULL);

    /* an aborted write leaves nothing */
    t = store_begin(st, 1);
    assert_int_equal(put_str(t, dbi, "msg:7", "never"), STORE_OK);
    store_abort(&t);
    check_value(st, dbi, "msg:7", NULL);
    store_close(&st);
    assert_null(st);
    store_close(&st); /* safe twice */

    /* reopen: committed data is there */
    st = open_store(f, 0, 0, &dbi);
    assert_int_equal(store_db(st, "meta", &meta), STORE_OK);
    check_value(st, dbi, "msg:1", "changed");
    check_value(st, dbi, "msg:2", NULL);
    check_value(st, meta, "msg:1", "in another db");
    t = store_begin(st, 0);
    store_val_t v;
    assert_int_equal(store_get(t, dbi, "\0k\0", 3, &v), STORE_OK);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.data, "\0v\0v", 4);
    /* a read transaction cannot write */
    assert_true(put_str(t, dbi, "x", "y") != STORE_OK);
    store_abort(&t);
    store_close(&st);
}

/* ---- scans ---- */

typedef struct seen {
    char keys[16][16];
    int n;
    int stop_at;
} seen_t;

static int collect(const store_val_t *key, const store_val_t *val, void *arg)
{
    seen_t *s = arg;
    assert_true(key->len < 16);
    assert_true(val->len > 0);
    memcpy(s->keys[s->n], key->data, key->len);
    s->keys[s->n][key->len] = '\0';
    s->n++;
    return s->stop_at && s->n == s->stop_at;
}

static void test_scan(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    store_t *st = open_store(f, 0, 0, &dbi);
    static const char *keys[] = {"b:1", "a:3", "a:1", "ab", "a:2", "a", "c"};
    store_txn_t *t = store_begin(st, 1);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(put_str(t, dbi, keys[i], "v"), STORE_OK);
    assert_int_equal(store_commit(&t), STORE_OK);

    static const struct {
        const char *prefix, *start;
        int stop_at;
        long count;
        const char *want[8];
    } cases[] = {
        {"a:", NULL, 0, 3, {"a:1", "a:2", "a:3"}},
        {"a", NULL, 0, 5, {"a", "a:1", "a:2", "a:3", "ab"}},
        {"a:", "a:2", 0, 2, {"a:2", "a:3"}},
        {"a:", "a:15", 0, 2, {"a:2", "a:3"}}, /* start between keys */
        {"a:", "a:4", 0, 0, {NULL}},
        {"z", NULL, 0, 0, {NULL}},
        {NULL, NULL, 0, 7, {"a", "a:1", "a:2", "a:3", "ab", "b:1", "c"}},
        {NULL, "ab", 0, 3, {"ab", "b:1", "c"}},
        {"a:", NULL, 2, 2, {"a:1", "a:2"}}, /* fn stops the scan */
        {"c", NULL, 0, 1, {"c"}},
        {"c:", NULL, 0, 0, {NULL}},
    };
    t = store_begin(st, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        seen_t s = {.stop_at = cases[i].stop_at};
        const char *p = cases[i].prefix, *b = cases[i].start;
        long n = store_scan(t, dbi, p, p ? strlen(p) : 0, b, b ? strlen(b) : 0, collect, &s);
        if (n != cases[i].count || s.n != cases[i].count)
            fail_msg("case %zu: %ld visited (%d seen), want %ld", i, n, s.n, cases[i].count);
        for (int k = 0; k < s.n; k++)
            assert_string_equal(s.keys[k], cases[i].want[k]);
    }
    store_abort(&t);
    store_close(&st);
}

/* ---- store_write ---- */

typedef struct batch {
    unsigned dbi;
    int count;        /* values to write */
    size_t vlen;
    int calls;        /* how often store_write ran us */
    int fail_with;    /* return this after writing, to abort */
} batch_t;

static void value_for(int i, size_t vlen, char *buf)
{
    for (size_t j = 0; j < vlen; j++)
        buf[j] = (char)('a' + (i * 7 + (int)j) % 26);
}

static int write_batch(store_txn_t *t, void *arg)
{
    batch_t *b = arg;
    b->calls++;
    char *v = malloc(b->vlen);
    for (int i = 0; i < b->count; i++) {
        char k[32];
        int kl = snprintf(k, sizeof(k), "key:%06d", i);
        value_for(i, b->vlen, v);
        int rc = store_put(t, b->dbi, k, (size_t)kl, v, b->vlen);
        if (rc != STORE_OK) {
            free(v);
            return rc;
        }
    }
    free(v);
    return b->fail_with;
}

static int check_batch(store_t *st, batch_t *b)
{
    store_txn_t *t = store_begin(st, 0);
    char *v = malloc(b->vlen);
    int ok = 0;
    for (int i = 0; i < b->count; i++) {
        char k[32];
        int kl = snprintf(k, sizeof(k), "key:%06d", i);
        store_val_t val;
        if (store_get(t, b->dbi, k, (size_t)kl, &val) != STORE_OK)
            continue;
        value_for(i, b->vlen, v);
        if (val.len == b->vlen && memcmp(val.data, v, b->vlen) == 0)
            ok++;
    }
    free(v);
    store_abort(&t);
    return ok;
}

static void test_write_commit_and_abort(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    store_t *st = open_store(f, 0, 0, &dbi);
    /* a value of the caller's own (above 100) aborts and comes back as is */
    batch_t b = {.dbi = dbi, .count = 10, .vlen = 100, .fail_with = 150};
    assert_int_equal(store_write(st, write_batch, &b), 150);
    assert_int_equal(b.calls, 1);
    assert_int_equal(check_batch(st, &b), 0);

    b.fail_with = 0;
    assert_int_equal(store_write(st, write_batch, &b), STORE_OK);
    assert_int_equal(b.calls, 2);
    assert_int_equal(check_batch(st, &b), 10);
    store_close(&st);
}

static store_t *open_nosync(fx_t *f, unsigned *dbi)
{
    store_opts_t o = {.nosync = 1};
    char err[256] = "";
    store_t *st = store_open(f->dir, &o, err, sizeof(err));
    if (st == NULL)
        fail_msg("store_open: %s", err);
    assert_int_equal(store_db(st, "main", dbi), STORE_OK);
    return st;
}

static void test_nosync_and_sync(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    /* a writer that dies without a sync or a close, as a crash would */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store_t *st = open_nosync(f, &dbi);
        batch_t b = {.dbi = dbi, .count = 20, .vlen = 100};
        _exit(store_write(st, write_batch, &b) == STORE_OK ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* its commits are all there (they were in the OS cache) */
    store_t *st = open_nosync(f, &dbi);
    batch_t b = {.dbi = dbi, .count = 20, .vlen = 100};
    assert_int_equal(check_batch(st, &b), 20);
    b.count = 30;
    assert_int_equal(store_write(st, write_batch, &b), STORE_OK);
    assert_int_equal(store_sync(st), STORE_OK);
    assert_int_equal(check_batch(st, &b), 30);
    store_close(&st);

    /* a synced store may be flushed too: nothing to do */
    st = open_store(f, 0, 0, &dbi);
    assert_int_equal(check_batch(st, &b), 30);
    assert_int_equal(store_sync(st), STORE_OK);
    store_close(&st);
}

static void test_map_growth(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    size_t small = 256u << 10;
    store_t *st = open_store(f, small, 64u << 20, &dbi);
    store_stats_t s0;
    store_stats(st, &s0);
    assert_int_equal(s0.grows, 0);
    assert_true(s0.map_size < (1u << 20));

    /* 3 MiB in one transaction, far more than the first map holds */
    batch_t b = {.dbi = dbi, .count = 768, .vlen = 4096};
    assert_int_equal(store_write(st, write_batch, &b), STORE_OK);
    assert_true(b.calls > 1); /* aborted on a full map and run again */
    store_stats_t s1;
    store_stats(st, &s1);
    assert_true(s1.grows > 0);
    assert_true(s1.map_size >= (3u << 20));
    assert_true(s1.map_size <= (64u << 20));
    assert_true(s1.used_bytes >= (3u << 20));
    assert_true(s1.used_bytes <= s1.map_size);
    assert_int_equal(s1.entries, 768);
    assert_int_equal(check_batch(st, &b), 768);

    /* more, in small transactions, keeps growing as needed */
    for (int round = 0; round < 8; round++) {
        batch_t more = {.dbi = dbi, .count = 200, .vlen = 3000 + (size_t)round};
        assert_int_equal(store_write(st, write_batch, &more), STORE_OK);
        assert_int_equal(check_batch(st, &more), 200);
    }
    store_close(&st);

    /* reopened with the small size asked again, the store adopts the file's size */
    st = open_store(f, small, 64u << 20, &dbi);
    store_stats_t s2;
    store_stats(st, &s2);
    assert_true(s2.map_size >= (3u << 20));
    b.vlen = 3007; /* the last round overwrote keys 0..199 */
    b.count = 200;
    assert_int_equal(check_batch(st, &b), 200);
    store_close(&st);
}

static void test_full_at_ceiling(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    store_t *st = open_store(f, 256u << 10, 1u << 20, &dbi);
    /* something committed before, which must survive */
    store_txn_t *t = store_begin(st, 1);
    assert_int_equal(put_str(t, dbi, "keep", "me"), STORE_OK);
    assert_int_equal(store_commit(&t), STORE_OK);

    batch_t b = {.dbi = dbi, .count = 512, .vlen = 4096}; /* 2 MiB > 1 MiB ceiling */
    assert_int_equal(store_write(st, write_batch, &b), STORE_FULL);
    assert_true(b.calls >= 2);
    store_stats_t s;
    store_stats(st, &s);
    assert_true(s.map_size <= (1u << 20));
    /* nothing partial */
    assert_int_equal(check_batch(st, &b), 0);
    assert_int_equal(s.entries, 1);
    check_value(st, dbi, "keep", "me");
    assert_string_equal(store_strerror(STORE_FULL), "store full");

    /* a small write still fits and commits */
    batch_t small = {.dbi = dbi, .count = 5, .vlen = 100};
    assert_int_equal(store_write(st, write_batch, &small), STORE_OK);
    assert_int_equal(check_batch(st, &small), 5);
    store_close(&st);
}

static int reserve_fn(store_txn_t *t, void *arg)
{
    unsigned dbi = *(unsigned *)arg;
    void *dst = NULL;
    int rc = store_reserve(t, dbi, "body:1", 6, 10000, &dst);
    if (rc != STORE_OK)
        return rc;
    assert_non_null(dst);
    for (int i = 0; i < 10000; i++)
        ((unsigned char *)dst)[i] = (unsigned char)(i % 253);
    return 0;
}

static void test_reserve(void **state)
{
    fx_t *f = *state;
    unsigned dbi;
    store_t *st = open_store(f, 0, 0, &dbi);
    assert_int_equal(store_write(st, reserve_fn, &dbi), STORE_OK);
    store_txn_t *t = store_begin(st, 0);
    store_val_t v;
    assert_int_equal(store_get(t, dbi, "body:1", 6, &v), STORE_OK);
    assert_int_equal(v.len, 10000);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(((const unsigned char *)v.data)[i], i % 253);
    store_abort(&t);
    store_close(&st);
}

static void test_stats_and_errors(void **state)
{
    fx_t *f = *state;
    unsigned a, b;
    store_t *st = open_store(f, 0, 0, &a);
    assert_int_equal(store_db(st, "second", &b), STORE_OK);
    store_txn_t *t = store_begin(st, 1);
    put_str(t, a, "1", "x");
    put_str(t, a, "2", "x");
    put_str(t, b, "1", "x");
    assert_int_equal(store_commit(&t), STORE_OK);
    store_stats_t s;
    store_stats(st, &s);
    assert_int_equal(s.entries, 3);
    assert_int_equal(store_db_entries(st, a), 2);
    assert_int_equal(store_db_entries(st, b), 1);
    assert_int_equal(s.map_size, STORE_DEFAULT_MAP);
    assert_true(s.used_bytes > 0);
    assert_int_equal(s.grows, 0);
    store_close(&st);

    assert_string_equal(store_strerror(STORE_OK), "ok");
    assert_string_equal(store_strerror(STORE_NOTFOUND), "not found");
    assert_string_equal(store_strerror(STORE_ERROR), "store error");

    /* a directory that cannot be made */
    char bad[700], err[256] = "";
    snprintf(bad, sizeof(bad), "%s/no/such/parent", f->base);
    assert_null(store_open(bad, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, bad));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_del_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_commit_and_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nosync_and_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_at_ceiling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_and_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
