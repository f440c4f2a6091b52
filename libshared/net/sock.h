/*
 * sock: plain socket helpers: listening sockets (with SO_REUSEPORT so several
 * ingress processes can share a port), non-blocking connects from a chosen
 * source address, and printing addresses. No TLS, no buffering: see conn.
 */
#ifndef SX_SOCK_H
#define SX_SOCK_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#define SOCK_ADDR_MAX 64 /* "[ffff:...]:65535" fits */

typedef struct sock_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} sock_addr_t;

/* Parse a numeric IPv4/IPv6 address and port; -1 when not numeric. */
int sock_addr_parse(const char *host, unsigned port, sock_addr_t *out);
/* "1.2.3.4" or "2001:db8::1" (no port). */
const char *sock_addr_ip(const sock_addr_t *a, char *buf, size_t size);
unsigned sock_addr_port(const sock_addr_t *a);

/* Bound, listening, non-blocking socket; -1 with err set. */
int sock_listen(const char *host, unsigned port, int backlog, char *err, size_t errlen);

/* Accept one connection (non-blocking, close-on-exec); -1 with errno. */
int sock_accept(int lfd, sock_addr_t *peer);

/*
 * Start a non-blocking connect to dst, bound to src first when src is not
 * NULL. Returns the fd (connect in progress or done) or -1 with errno.
 */
int sock_connect(const sock_addr_t *dst, const sock_addr_t *src);
/* After the fd turns writable: 0 when connected, else the errno. */
int sock_connect_result(int fd);

int sock_local(int fd, sock_addr_t *out);
int sock_peer(int fd, sock_addr_t *out);

#endif
