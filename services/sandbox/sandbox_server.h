/*
 * sandbox_server: the sandbox's listening socket and everything shared by
 * its sessions: the connection limit, the operator's fail mode (checked at
 * each accept) and the counters reported in ServicePong. It does not speak
 * SMTP (sandbox_session) nor read the bus (sandbox_control).
 */
#ifndef SX_SANDBOX_SERVER_H
#define SX_SANDBOX_SERVER_H

#include "core/loop.h"
#include "ipc/proto.h"
#include "sandbox_maildir.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sandbox_server sandbox_server_t;

typedef struct sandbox_opts {
    const char *address;
    unsigned port;
    const char *hostname;
    uint64_t slow_delay_ms;
    uint64_t max_message_size;
    uint64_t idle_timeout_ms;
    size_t max_connections;
    SSL_CTX *tls;       /* borrowed; NULL: no STARTTLS */
    maildir_t *maildir; /* borrowed */
} sandbox_opts_t;

/* Listen and serve; NULL with a reason in err. */
sandbox_server_t *sandbox_server_new(loop_t *loop, const sandbox_opts_t *opts, char *err,
                                     size_t errlen);
/* Close the listener and every session. */
void sandbox_server_destroy(sandbox_server_t **srv);

/*
 * Use tls for STARTTLS from now on (borrowed; NULL stops offering it).
 * Sessions already in TLS keep the context they started with.
 */
void sandbox_server_set_tls(sandbox_server_t *srv, SSL_CTX *tls);

/*
 * Set the fail mode for new connections (see sandbox_fail.h for the rules).
 * 0 and the wall-clock end in *until_wall_ms (0 when cleared); -1 with a
 * reason in err when the request is invalid.
 */
int sandbox_server_fail_set(sandbox_server_t *srv, unsigned code, uint64_t seconds,
                            const char *text, uint64_t *until_wall_ms, char *err, size_t errlen);

/* bus_stats_fn: connections, messages, files, fail mode. arg is the server. */
void sandbox_server_stats(PB(ServicePong) * pong, void *arg);

#endif
