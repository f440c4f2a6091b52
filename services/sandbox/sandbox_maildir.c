/*
 * sandbox_maildir: Maildir creation, unique names, spooling and the durable
 * commit (write, fsync, rename, fsync the directory). Blocking file I/O on
 * purpose: the sandbox is a test sink, and a 250 must mean "on disk".
 */
#include "sandbox_maildir.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/id.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define SPOOL_FLUSH    (64u << 10) /* write to the tmp/ file once this much is buffered */
#define SPOOL_BUF_MAX  (SPOOL_FLUSH * 4)
#define COPY_CHUNK     (64u << 10)
#define HEADER_MAX     (2 * 600)   /* two header lines around a path of at most 512 octets */

struct maildir {
    char path[MAILDIR_PATH_MAX];
    char host[MAILDIR_HOST_MAX];
    unsigned long long seq;
    int new_fd; /* new/, kept open for fsync after renames */
};

struct spool {
    maildir_t *md;
    char *sender;
    char name[MAILDIR_NAME_MAX];
    int fd;
    uint64_t header_len;
    uint64_t size;
    int err;
    buf_t pending;
};

/* ---- the Maildir ---- */

/* mkdir -p: every missing component of path, mode 0750. */
static int mkdir_parents(const char *path)
{
    char tmp[MAILDIR_PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Keep host names to characters that are safe in file names, replies and logs. */
static void safe_host(const char *in, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; in && in[i] && j + 1 < size; i++) {
        char c = in[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_';
        out[j++] = ok ? c : '_';
    }
    out[j] = '\0';
    if (j == 0)
        snprintf(out, size, "localhost");
}

maildir_t *maildir_open(const char *path, const char *hostname, char *err, size_t errlen)
{
    if (path == NULL || *path == '\0') {
        snprintf(err, errlen, "maildir path is empty");
        return NULL;
    }
    if (strlen(path) + 8 >= MAILDIR_PATH_MAX) {
        snprintf(err, errlen, "maildir path is longer than %d octets", MAILDIR_PATH_MAX - 8);
        return NULL;
    }
    maildir_t *md = xcalloc(1, sizeof(*md));
    md->new_fd = -1;
    sx_strlcpy(md->path, path, sizeof(md->path));
    size_t n = strlen(md->path);
    while (n > 1 && md->path[n - 1] == '/')
        md->path[--n] = '\0';
    safe_host(hostname, md->host, sizeof(md->host));

    static const char *const subdirs[] = {"new", "cur", "tmp"};
    if (mkdir_parents(md->path) < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", md->path, strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < 3; i++) {
        char sub[MAILDIR_PATH_MAX + 8];
        snprintf(sub, sizeof(sub), "%s/%s", md->path, subdirs[i]);
        struct stat st;
        if (mkdir(sub, 0750) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "%s: cannot create: %s", sub, strerror(errno));
            goto fail;
        }
        if (stat(sub, &st) < 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: not a directory", sub);
            goto fail;
        }
        if (access(sub, W_OK | X_OK) < 0) {
            snprintf(err, errlen, "%s: not writable: %s", sub, strerror(errno));
            goto fail;
        }
    }
    char newdir[MAILDIR_PATH_MAX + 8];
    snprintf(newdir, sizeof(newdir), "%s/new", md->path);
    md->new_fd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (md->new_fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", newdir, strerror(errno));
        goto fail;
    }
    return md;
fail:
    maildir_destroy(&md);
    return NULL;
}

void maildir_destroy(maildir_t **p)
{
    maildir_t *md = *p;
    if (md == NULL)
        return;
    if (md->new_fd >= 0)
        close(md->new_fd);
    free(md);
    *p = NULL;
}

const char *maildir_path(const maildir_t *md)
{
    return md->path;
}

void maildir_unique_name(maildir_t *md, char out[MAILDIR_NAME_MAX])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* time and pid as Maildir has it; a counter and 32 random bits so that
     * several sandbox processes sharing one Maildir never collide */
    snprintf(out, MAILDIR_NAME_MAX, "%lld.M%06ldP%dQ%lluR%08x.%s", (long long)tv.tv_sec,
             (long)tv.tv_usec, (int)getpid(), ++md->seq, (unsigned)(id_random64() & 0xffffffffu),
             md->host);
}

/* ---- files ---- */

static void tmp_path(const maildir_t *md, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/tmp/%s", md->path, name);
}

static void new_path(const maildir_t *md, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/new/%s", md->path, name);
}

/* write(2) until done. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int header_lines(char *out, size_t size, const char *sender, const char *rcpt)
{
    int n = snprintf(out, size, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", sender ? sender : "",
                     rcpt ? rcpt : "");
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return n;
}

/* Create tmp/<name> and write the header lines; the fd, or -1 with errno. */
static int tmp_create(maildir_t *md, char name[MAILDIR_NAME_MAX], const char *sender,
                      const char *rcpt, uint64_t *header_len)
{
    char hdr[HEADER_MAX];
    int hlen = header_lines(hdr, sizeof(hdr), sender, rcpt);
    if (hlen < 0)
        return -1;
    char path[MAILDIR_PATH_MAX + MAILDIR_NAME_MAX + 8];
    int fd = -1;
    for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
        maildir_unique_name(md, name);
        tmp_path(md, name, path, sizeof(path));
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd < 0 && errno != EEXIST)
            return -1;
    }
    if (fd < 0)
        return -1;
    if (write_all(fd, hdr, (size_t)hlen) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    *header_len = (uint64_t)hlen;
    return fd;
}

/* Copy len octets of src from offset off to the end of dst. */
static int copy_range(int src, uint64_t off, uint64_t len, int dst)
{
    loff_t in = (loff_t)off;
    while (len > 0) {
        ssize_t n = copy_file_range(src, &in, dst, NULL, len > (1u << 30) ? (1u << 30) : len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
            break; /* no in-kernel copy here: do it by hand */
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO; /* the spool is shorter than it says */
            return -1;
        }
        len -= (uint64_t)n;
    }
    char *chunk = len ? xmalloc(COPY_CHUNK) : NULL;
    while (len > 0) {
        size_t want = len > COPY_CHUNK ? COPY_CHUNK : (size_t)len;
        ssize_t n = pread(src, chunk, want, in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(dst, chunk, (size_t)n) < 0) {
            int e = n == 0 ? EIO : errno;
            free(chunk);
            errno = e;
            return -1;
        }
        in += n;
        len -= (uint64_t)n;
    }
    free(chunk);
    return 0;
}

/* ---- the spool ---- */

spool_t *spool_new(maildir_t *md, const char *sender, const char *rcpt)
{
    spool_t *sp = xcalloc(1, sizeof(*sp));
    sp->md = md;
    sp->fd = tmp_create(md, sp->name, sender, rcpt, &sp->header_len);
    if (sp->fd < 0) {
        int e = errno;
        free(sp);
        errno = e;
        return NULL;
    }
    sp->sender = xstrdup(sender ? sender : "");
    buf_init(&sp->pending, SPOOL_BUF_MAX);
    return sp;
}

static int spool_flush(spool_t *sp)
{
    if (sp->err)
        return -1;
    if (buf_used(&sp->pending) == 0)
        return 0;
    if (write_all(sp->fd, buf_head(&sp->pending), buf_used(&sp->pending)) < 0) {
        sp->err = errno ? errno : EIO;
        buf_reset(&sp->pending);
        return -1;
    }
    buf_reset(&sp->pending);
    return 0;
}

int spool_write(spool_t *sp, const void *p, size_t n)
{
    if (sp->err)
        return -1;
    if (n == 0)
        return 0;
    if (buf_used(&sp->pending) + n > SPOOL_FLUSH) {
        if (spool_flush(sp) < 0)
            return -1;
        if (n >= SPOOL_FLUSH) {
            /* big pieces go straight to the file */
            if (write_all(sp->fd, p, n) < 0) {
                sp->err = errno ? errno : EIO;
                return -1;
            }
            sp->size += n;
            return 0;
        }
    }
    if (buf_append(&sp->pending, p, n) < 0) {
        sp->err = ENOBUFS;
        return -1;
    }
    sp->size += n;
    return 0;
}

uint64_t spool_size(const spool_t *sp)
{
    return sp->size;
}

int spool_error(const spool_t *sp)
{
    return sp->err;
}

static void spool_free(spool_t *sp)
{
    if (sp->fd >= 0)
        close(sp->fd);
    buf_free(&sp->pending);
    free(sp->sender);
    free(sp);
}

void spool_abort(spool_t **p)
{
    spool_t *sp = *p;
    if (sp == NULL)
        return;
    char path[MAILDIR_PATH_MAX + MAILDIR_NAME_MAX + 8];
    tmp_path(sp->md, sp->name, path, sizeof(path));
    unlink(path);
    spool_free(sp);
    *p = NULL;
}

int spool_commit(spool_t **p, const char *const *rcpts, size_t n,
                 char (*names)[MAILDIR_NAME_MAX])
{
    spool_t *sp = *p;
    *p = NULL;
    maildir_t *md = sp->md;
    int e = 0;
    size_t made = 1, renamed = 0;
    char from[MAILDIR_PATH_MAX + MAILDIR_NAME_MAX + 8], to[sizeof(from)];

    if (n == 0) {
        e = EINVAL;
        goto fail;
    }
    sx_strlcpy(names[0], sp->name, MAILDIR_NAME_MAX);
    if (spool_flush(sp) < 0 || fsync(sp->fd) < 0) {
        e = sp->err ? sp->err : errno;
        goto fail;
    }
    /* the other recipients: their own header lines, then the same octets */
    for (size_t i = 1; i < n; i++) {
        uint64_t hlen;
        int fd = tmp_create(md, names[i], sp->sender, rcpts[i], &hlen);
        if (fd < 0) {
            e = errno;
            goto fail;
        }
        made++;
        if (copy_range(sp->fd, sp->header_len, sp->size, fd) < 0 || fsync(fd) < 0) {
            e = errno ? errno : EIO;
            close(fd);
            goto fail;
        }
        if (close(fd) < 0) {
            e = errno;
            goto fail;
        }
    }
    if (close(sp->fd) < 0) {
        sp->fd = -1;
        e = errno;
        goto fail;
    }
    sp->fd = -1;
    for (renamed = 0; renamed < n; renamed++) {
        tmp_path(md, names[renamed], from, sizeof(from));
        new_path(md, names[renamed], to, sizeof(to));
        if (rename(from, to) < 0) {
            e = errno;
            goto fail;
        }
    }
    if (fsync(md->new_fd) < 0) {
        e = errno;
        goto fail;
    }
    spool_free(sp);
    return 0;

fail:
    /* leave nothing behind: neither the files already in new/ nor those in tmp/ */
    for (size_t i = 0; i < made && i < n; i++) {
        if (i < renamed) {
            new_path(md, names[i], to, sizeof(to));
            unlink(to);
        } else {
            tmp_path(md, names[i], from, sizeof(from));
            unlink(from);
        }
    }
    if (n == 0) {
        tmp_path(md, sp->name, from, sizeof(from));
        unlink(from);
    }
    if (renamed > 0)
        fsync(md->new_fd);
    spool_free(sp);
    errno = e ? e : EIO;
    return -1;
}
