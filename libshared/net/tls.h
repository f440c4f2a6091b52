/*
 * tls: OpenSSL contexts with the project's policy: TLS 1.2 and 1.3 only,
 * forward-secret AEAD ciphers for 1.2, OpenSSL's defaults for 1.3. Server
 * contexts are rebuilt from disk on SIGHUP by their owners and swapped in;
 * sessions already running keep the context they started with (OpenSSL
 * counts references), so certificates rotate without dropping anyone.
 */
#ifndef SX_TLS_H
#define SX_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#define TLS_CIPHERS_12                                                                         \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A server context from PEM files; NULL with err naming the file and reason. */
SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);

/*
 * A client context. ca_file NULL: the system's trust store. Verification of
 * the chain is set per connection (conn_tls_connect), since opportunistic
 * delivery must be able to go on with a certificate it cannot verify.
 */
SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen);

void tls_ctx_free(SSL_CTX **ctx);

/* The oldest OpenSSL error as text (and clear the queue). */
const char *tls_last_error(char *buf, size_t size);

#endif
