/*
 * test_cert: a self-signed certificate and key for the net tests, written
 * as PEM files into a fresh temporary folder, and removed afterwards.
 * Header only: each test binary that needs it includes it.
 */
#ifndef SX_TEST_CERT_H
#define SX_TEST_CERT_H

#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_CERT_NAME "mx.test.example"

typedef struct test_cert {
    char dir[512];
    char cert[600];
    char key[600];
    char other_key[600]; /* a key that does not match cert */
} test_cert_t;

static int test_cert_write_key(const char *path, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return ok ? 0 : -1;
}

/* Make dir, a P-256 key and a certificate for TEST_CERT_NAME; 0 on success. */
static int test_cert_make(test_cert_t *tc)
{
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(tc->dir, sizeof(tc->dir), "%s/cert.XXXXXX", base);
    if (mkdtemp(tc->dir) == NULL)
        return -1;
    snprintf(tc->cert, sizeof(tc->cert), "%s/cert.pem", tc->dir);
    snprintf(tc->key, sizeof(tc->key), "%s/key.pem", tc->dir);
    snprintf(tc->other_key, sizeof(tc->other_key), "%s/other.pem", tc->dir);

    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    EVP_PKEY *other = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (pkey == NULL || other == NULL || x == NULL)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)TEST_CERT_NAME,
                               -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san =
        X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:" TEST_CERT_NAME);
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    if (san == NULL || bc == NULL)
        goto out;
    X509_add_ext(x, san, -1);
    X509_add_ext(x, bc, -1);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        goto out;
    FILE *f = fopen(tc->cert, "w");
    if (f == NULL)
        goto out;
    int ok = PEM_write_X509(f, x);
    fclose(f);
    if (!ok || test_cert_write_key(tc->key, pkey) < 0 ||
        test_cert_write_key(tc->other_key, other) < 0)
        goto out;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(other);
    return rc;
}

/* Remove the folder and whatever a test left in it. */
static void test_cert_remove(test_cert_t *tc)
{
    DIR *d = opendir(tc->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char p[1100];
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", tc->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tc->dir);
}

#endif
