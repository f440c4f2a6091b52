/*
 * sandbox_cmd: the text of SMTP command lines as the sandbox reads them:
 * splitting a line into verb and arguments, and the argument grammars of
 * MAIL FROM:/RCPT TO:, SIZE= and BDAT. Pure parsing, no replies and no
 * state: sandbox_session decides what to answer.
 */
#ifndef SX_SANDBOX_CMD_H
#define SX_SANDBOX_CMD_H

#include <stddef.h>
#include <stdint.h>

#define CMD_LINE_MAX 512 /* octets, CRLF included (RFC 5321 4.5.3.1.4) */
#define CMD_VERB_MAX 16

typedef enum {
    CMD_LINE_OK = 0,
    CMD_LINE_CONTROL, /* NUL or another control octet inside the line */
} cmd_line_status_t;

/*
 * Take one line (without its LF; a trailing CR is dropped here) into out
 * (CMD_LINE_MAX bytes): checked for control octets, NUL-terminated.
 */
cmd_line_status_t cmd_line_take(const char *p, size_t len, char out[CMD_LINE_MAX]);

/*
 * Split "VERB args" into an uppercased verb (longer verbs are cut, so they
 * match nothing) and a pointer to the arguments with leading spaces skipped
 * ("" when none).
 */
void cmd_split(const char *line, char verb[CMD_VERB_MAX], const char **args);

/* "FROM:" / "TO:" (case-insensitive, spaces after the colon allowed): the rest, or NULL. */
const char *cmd_after_keyword(const char *args, const char *keyword);

/* BDAT arguments: "<size> [LAST]". 0, or -1 when malformed. */
int cmd_bdat_parse(const char *args, uint64_t *size, int *last);

/* A SIZE= value: decimal digits only, no overflow. 0, or -1. */
int cmd_number(const char *text, uint64_t *out);

#endif
