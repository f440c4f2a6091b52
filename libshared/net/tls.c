/*
 * tls: building OpenSSL contexts.
 */
#include "tls.h"

#include <openssl/err.h>
#include <stdio.h>

const char *tls_last_error(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, size, "unknown TLS error");
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

static SSL_CTX *ctx_common(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* partial writes and moving buffers: we write from a growable buffer;
     * release buffers: an idle TLS session should hold little memory */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx = ctx_common(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create TLS context: %s",
                 tls_last_error(reason, sizeof(reason)));
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "%s: cannot load certificate: %s", cert_file,
                 tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "%s: cannot load private key: %s", key_file,
                 tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s does not match %s", key_file, cert_file);
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sendarix", 8);
    /* one TLS 1.3 ticket, not OpenSSL's two (meant for browsers that open
     * connections in parallel): a mail client resumes one session at a time */
    SSL_CTX_set_num_tickets(ctx, 1);
    /* send the chain as the file has it; without this OpenSSL tries to
     * build one at every handshake (a certificate verification each time)
     * when the file holds the leaf alone */
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx = ctx_common(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create TLS context: %s",
                 tls_last_error(reason, sizeof(reason)));
        return NULL;
    }
    int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "%s: cannot load trust anchors: %s",
                 ca_file && *ca_file ? ca_file : "system store",
                 tls_last_error(reason, sizeof(reason)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_ctx_free(SSL_CTX **ctx)
{
    if (*ctx) {
        SSL_CTX_free(*ctx);
        *ctx = NULL;
    }
}
