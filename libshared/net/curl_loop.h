/*
 * curl_loop: libcurl's multi interface driven by the service's loop. curl
 * says which sockets it wants watched and when it needs a turn; the loop
 * watches them and hands them back to curl, and each finished transfer is
 * reported once to its done callback. One multi handle per curl_loop, so
 * kept connections are shared only among the transfers of one owner.
 * It does not set up transfers (URL, TLS, limits, bodies are the caller's
 * easy handles) and does not look at what they carry.
 *
 * The driver uses CURLOPT_PRIVATE of every easy handle it runs: callers must
 * not set or read it.
 */
#ifndef SX_CURL_LOOP_H
#define SX_CURL_LOOP_H

#include "core/loop.h"

#include <curl/curl.h>
#include <stddef.h>

typedef struct curl_loop curl_loop_t;

/*
 * A transfer ended (rc is curl's result: CURLE_OK when an answer came).
 * The easy handle is already out of the driver: the callback may read it
 * with curl_easy_getinfo and clean it up, add or remove other transfers,
 * and destroy the curl_loop.
 */
typedef void (*curl_loop_done_fn)(CURL *easy, CURLcode rc, void *arg);

/* NULL with err when libcurl cannot start (curl_global_init runs once per process). */
curl_loop_t *curl_loop_new(loop_t *loop, char *err, size_t errlen);

/*
 * Transfers still running are taken out of curl without their done; their
 * easy handles stay the callers'. Safe from inside a done callback: the
 * driver is then freed once that callback returns. Not from curl's own
 * callbacks (write, read, header functions).
 */
void curl_loop_destroy(curl_loop_t **cl);

/*
 * Start a transfer set up on easy. done runs exactly once, from the loop,
 * never inside this call, unless curl_loop_remove() comes first. -1 when
 * curl refuses the handle (or it is running already): done will not run.
 */
int curl_loop_add(curl_loop_t *cl, CURL *easy, curl_loop_done_fn done, void *arg);

/*
 * Stop a transfer: done will not run; the caller still cleans the easy
 * handle up. A no-op for a handle that is not running (never added, or
 * already reported to done).
 */
void curl_loop_remove(curl_loop_t *cl, CURL *easy);

#endif
