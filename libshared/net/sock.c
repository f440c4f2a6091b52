/*
 * sock: listening, accepting and connecting, all non-blocking.
 */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int sock_addr_parse(const char *host, unsigned port, sock_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    /* accept "[::1]" as well as "::1" */
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(tmp)) {
        memcpy(tmp, host + 1, n - 2);
        tmp[n - 2] = '\0';
        host = tmp;
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*in6);
        return 0;
    }
    return -1;
}

const char *sock_addr_ip(const sock_addr_t *a, char *buf, size_t size)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (inet_ntop(sa->sa_family, src, buf, (socklen_t)size) == NULL)
        snprintf(buf, size, "unknown");
    /* show IPv4-mapped IPv6 peers as plain IPv4 */
    if (strncmp(buf, "::ffff:", 7) == 0 && strchr(buf + 7, '.'))
        memmove(buf, buf + 7, strlen(buf + 7) + 1);
    return buf;
}

unsigned sock_addr_port(const sock_addr_t *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

int sock_listen(const char *host, unsigned port, int backlog, char *err, size_t errlen)
{
    sock_addr_t a;
    if (sock_addr_parse(host, port, &a) < 0) {
        snprintf(err, errlen, "listen address %s is not a numeric IP address", host);
        return -1;
    }
    int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a.ss, a.len) < 0 || listen(fd, backlog) < 0) {
        snprintf(err, errlen, "%s:%u: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int sock_accept(int lfd, sock_addr_t *peer)
{
    peer->len = sizeof(peer->ss);
    int fd = accept4(lfd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

int sock_connect(const sock_addr_t *dst, const sock_addr_t *src)
{
    int fd = socket(dst->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (src && bind(fd, (const struct sockaddr *)&src->ss, src->len) < 0)
        goto fail;
    if (connect(fd, (const struct sockaddr *)&dst->ss, dst->len) < 0 && errno != EINPROGRESS)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int sock_connect_result(int fd)
{
    int e = 0;
    socklen_t len = sizeof(e);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        return errno;
    return e;
}

int sock_local(int fd, sock_addr_t *out)
{
    out->len = sizeof(out->ss);
    return getsockname(fd, (struct sockaddr *)&out->ss, &out->len);
}

int sock_peer(int fd, sock_addr_t *out)
{
    out->len = sizeof(out->ss);
    return getpeername(fd, (struct sockaddr *)&out->ss, &out->len);
}
