/*
 * id: identifiers for messages, sessions, requests and events. A message id
 * is 20 characters of lowercase base32 (0-9, a-v): 48 bits of wall-clock
 * milliseconds, so ids sort by arrival, then 52 random bits from the kernel,
 * so several ingress copies never collide. Ids are safe in file names, logs
 * and SMTP replies. Within one process, ids of the same millisecond count
 * up, so they sort in the order they were made.
 */
#ifndef SX_ID_H
#define SX_ID_H

#include <stddef.h>
#include <stdint.h>

#define ID_LEN      20
#define ID_BUF_SIZE (ID_LEN + 1)

/* Write a new message-style id into out (ID_BUF_SIZE bytes). */
void id_new(char out[ID_BUF_SIZE]);

/* Short random hex id (session ids): 16 hex digits. */
void id_session(char out[17]);

/* Random 64-bit value from the kernel's CSPRNG. */
uint64_t id_random64(void);

/* 1 if s looks like an id made by id_new(). */
int id_valid(const char *s);

#endif
