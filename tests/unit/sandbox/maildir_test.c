/*
 * maildir_test: the sandbox's Maildir: creation of the folders, unique and
 * safe file names, spooling (small, large and binary bodies), one file per
 * recipient with its header lines, and that abort or a failed commit leaves
 * nothing behind in tmp/ or new/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "sandbox_maildir.h"

typedef struct fx {
    char root[512]; /* a fresh folder per test */
    char md[600];   /* root/a/b/maildir: parents made by maildir_open */
} fx_t;

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[1024];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

static int setup(void **state)
{
    fx_t *f = xcalloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0750);
    snprintf(f->root, sizeof(f->root), "%s/sandbox-maildir-XXXXXX", base);
    if (mkdtemp(f->root) == NULL)
        return -1;
    snprintf(f->md, sizeof(f->md), "%s/a/b/maildir", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    rm_rf(f->root);
    free(f);
    return 0;
}

/* Names in dir (sorted not needed), count returned; names copied into out. */
static size_t list_dir(const char *dir, char out[][MAILDIR_NAME_MAX], size_t max)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n < max)
            snprintf(out[n], MAILDIR_NAME_MAX, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static size_t count_in(const fx_t *f, const char *sub)
{
    char dir[700];
    snprintf(dir, sizeof(dir), "%s/%s", f->md, sub);
    return list_dir(dir, NULL, 0);
}

static char *read_file(const fx_t *f, const char *name, size_t *len)
{
    char path[800];
    snprintf(path, sizeof(path), "%s/new/%s", f->md, name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = xmalloc((size_t)n + 1);
    assert_int_equal(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return data;
}

static void assert_stored(const fx_t *f, const char *name, const char *sender, const char *rcpt,
                          const char *body, size_t body_len)
{
    char head[1200];
    int hlen = snprintf(head, sizeof(head), "Return-Path: <%s>\r\nDelivered-To: %s\r\n", sender,
                        rcpt);
    size_t len;
    char *data = read_file(f, name, &len);
    assert_int_equal(len, (size_t)hlen + body_len);
    assert_memory_equal(data, head, (size_t)hlen);
    assert_memory_equal(data + hlen, body, body_len);
    free(data);
}

static void test_open_creates_folders(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    static const char *const subs[] = {"new", "cur", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        char p[700];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", f->md, subs[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
    }
    maildir_destroy(&md);
    assert_null(md);
    maildir_destroy(&md); /* safe twice */

    /* open again: existing folders are fine; a trailing slash too */
    char slash[700];
    snprintf(slash, sizeof(slash), "%s/", f->md);
    md = maildir_open(slash, "relay.test", err, sizeof(err));
    assert_non_null(md);
    assert_string_equal(maildir_path(md), f->md);
    maildir_destroy(&md);

    /* a file where a folder must be */
    char blocked[700];
    snprintf(blocked, sizeof(blocked), "%s/blocked", f->root);
    mkdir(blocked, 0750);
    char tmp[720];
    snprintf(tmp, sizeof(tmp), "%s/tmp", blocked);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fclose(fp);
    err[0] = '\0';
    assert_null(maildir_open(blocked, "relay.test", err, sizeof(err)));
    assert_non_null(strstr(err, "tmp"));
    assert_null(maildir_open("", "relay.test", err, sizeof(err)));
}

static void test_unique_safe_names(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "evil/host:name with space", err, sizeof(err));
    assert_non_null(md);
    enum { N = 2000 };
    char(*names)[MAILDIR_NAME_MAX] = xcalloc(N, sizeof(*names));
    for (size_t i = 0; i < N; i++) {
        maildir_unique_name(md, names[i]);
        assert_null(strchr(names[i], '/'));
        assert_null(strchr(names[i], ':'));
        assert_null(strchr(names[i], ' '));
        assert_non_null(strstr(names[i], ".evil_host_name_with_space"));
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                fail_msg("duplicate name %s", names[i]);
    }
    free(names);
    maildir_destroy(&md);
}

static void test_one_recipient(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    const char body[] = "Subject: x\r\n\r\n.dot line kept as is\r\n";
    spool_t *sp = spool_new(md, "a@example.test", "b@example.org");
    assert_non_null(sp);
    assert_int_equal(count_in(f, "tmp"), 1);
    assert_int_equal(spool_write(sp, body, 10), 0);
    assert_int_equal(spool_write(sp, body + 10, sizeof(body) - 1 - 10), 0);
    assert_int_equal(spool_size(sp), sizeof(body) - 1);
    assert_int_equal(spool_error(sp), 0);
    const char *rcpts[] = {"b@example.org"};
    char names[1][MAILDIR_NAME_MAX];
    assert_int_equal(spool_commit(&sp, rcpts, 1, names), 0);
    assert_null(sp);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "new"), 1);
    assert_stored(f, names[0], "a@example.test", "b@example.org", body, sizeof(body) - 1);
    maildir_destroy(&md);
}

static void test_many_recipients_large_binary_body(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    /* past the spool's buffer, in odd pieces and one big piece, with every octet value */
    size_t len = 700 * 1024 + 17;
    char *body = xmalloc(len);
    for (size_t i = 0; i < len; i++)
        body[i] = (char)(i * 31 + (i >> 8));
    spool_t *sp = spool_new(md, "", "first@example.org");
    assert_non_null(sp);
    size_t off = 0, piece = 1;
    while (off < 300 * 1024) {
        assert_int_equal(spool_write(sp, body + off, piece), 0);
        off += piece;
        piece = piece * 3 % 9001 + 1;
    }
    assert_int_equal(spool_write(sp, body + off, len - off), 0);
    assert_int_equal(spool_size(sp), len);
    const char *rcpts[] = {"first@example.org", "second@example.org", "third@example.net"};
    char names[3][MAILDIR_NAME_MAX];
    assert_int_equal(spool_commit(&sp, rcpts, 3, names), 0);
    assert_int_equal(count_in(f, "new"), 3);
    assert_int_equal(count_in(f, "tmp"), 0);
    for (size_t i = 0; i < 3; i++)
        assert_stored(f, names[i], "", rcpts[i], body, len);
    assert_string_not_equal(names[0], names[1]);
    assert_string_not_equal(names[1], names[2]);
    free(body);
    maildir_destroy(&md);
}

static void test_abort_leaves_nothing(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    spool_t *sp = spool_new(md, "a@example.test", "b@example.org");
    assert_non_null(sp);
    assert_int_equal(spool_write(sp, "hello", 5), 0);
    spool_abort(&sp);
    assert_null(sp);
    spool_abort(&sp); /* safe on NULL */
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "new"), 0);
    maildir_destroy(&md);
}

static void test_failed_commit_leaves_nothing(void **state)
{
    fx_t *f = *state;
    char err[512];
    maildir_t *md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    spool_t *sp = spool_new(md, "a@example.test", "b@example.org");
    assert_non_null(sp);
    assert_int_equal(spool_write(sp, "body\r\n", 6), 0);
    /* new/ vanishes: the renames fail */
    char newdir[700];
    snprintf(newdir, sizeof(newdir), "%s/new", f->md);
    assert_int_equal(rmdir(newdir), 0);
    const char *rcpts[] = {"b@example.org", "c@example.org"};
    char names[2][MAILDIR_NAME_MAX];
    errno = 0;
    assert_int_equal(spool_commit(&sp, rcpts, 2, names), -1);
    assert_int_not_equal(errno, 0);
    assert_null(sp);
    assert_int_equal(count_in(f, "tmp"), 0);
    maildir_destroy(&md);

    /* no spool at all when tmp/ cannot take files */
    assert_int_equal(mkdir(newdir, 0750), 0);
    md = maildir_open(f->md, "relay.test", err, sizeof(err));
    assert_non_null(md);
    char tmpdir[700];
    snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", f->md);
    assert_int_equal(rmdir(tmpdir), 0);
    errno = 0;
    assert_null(spool_new(md, "a@example.test", "b@example.org"));
    assert_int_not_equal(errno, 0);
    maildir_destroy(&md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_safe_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_recipient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_recipients_large_binary_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_leaves_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
