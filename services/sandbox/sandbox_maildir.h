/*
 * sandbox_maildir: where the sandbox keeps what it accepts. A Maildir
 * (new/, cur/, tmp/), one file per accepted recipient, each holding the
 * message exactly as received with "Return-Path: <sender>" and
 * "Delivered-To: recipient" prepended. A message is spooled to tmp/ while it
 * arrives (so a big message never sits in memory) and committed at its end:
 * every file written and fsync'd in tmp/, renamed into new/, and new/
 * fsync'd, before the caller may say 250. It knows nothing of SMTP.
 */
#ifndef SX_SANDBOX_MAILDIR_H
#define SX_SANDBOX_MAILDIR_H

#include <stddef.h>
#include <stdint.h>

#define MAILDIR_NAME_MAX   160  /* one file name in new/ */
#define MAILDIR_HOST_MAX   64   /* the host part of file names */
#define MAILDIR_PATH_MAX   1024 /* the Maildir's own path */

typedef struct maildir maildir_t;
typedef struct spool spool_t;

/*
 * Open the Maildir at path, creating it and its new/, cur/ and tmp/ when
 * missing (parents too). hostname goes into file names, made safe. NULL with
 * a reason in err.
 */
maildir_t *maildir_open(const char *path, const char *hostname, char *err, size_t errlen);
void maildir_destroy(maildir_t **md);
const char *maildir_path(const maildir_t *md);

/* A fresh unique file name ("<sec>.M<usec>P<pid>Q<n>R<rand>.<host>"). */
void maildir_unique_name(maildir_t *md, char out[MAILDIR_NAME_MAX]);

/*
 * Start a message: a file in tmp/ that begins with the two header lines for
 * rcpt (the first recipient). sender is "" for the null path. NULL with
 * errno set when the file cannot be made.
 */
spool_t *spool_new(maildir_t *md, const char *sender, const char *rcpt);

/* Append message octets (buffered). -1 once a write failed; later calls do nothing. */
int spool_write(spool_t *sp, const void *p, size_t n);
/* Message octets written so far (the header lines not counted). */
uint64_t spool_size(const spool_t *sp);
/* The errno of the first failure, or 0. */
int spool_error(const spool_t *sp);

/*
 * Store the message once per recipient: rcpts[0] must be the recipient given
 * to spool_new. names[i] receives the file name of rcpts[i]. 0 when every
 * file is in new/ and synced; -1 with errno when not, and then nothing of the
 * message is left in tmp/ or new/. The spool is consumed either way.
 */
int spool_commit(spool_t **sp, const char *const *rcpts, size_t n,
                 char (*names)[MAILDIR_NAME_MAX]);

/* Drop the message: the tmp/ file is removed. Safe on NULL. */
void spool_abort(spool_t **sp);

#endif
