/*
 * header: reading RFC 5322 header fields out of a message's header block:
 * finding a field (unfolded), and the addresses in an address-list field
 * such as From:, with display names, quoted strings, comments and groups.
 * It reads; it does not rewrite headers or decode encoded words.
 */
#ifndef SX_HEADER_H
#define SX_HEADER_H

#include <stddef.h>

#define HEADER_VALUE_MAX 8192

/*
 * Offset just past the blank line that ends the header block in p[0..len),
 * or -1 when it has not ended there. A message that starts with CRLF has
 * an empty header block (returns 2).
 */
long header_block_end(const char *p, size_t len);

/*
 * Copy the unfolded value of the first field called name (case-insensitive)
 * in the header block into out; returns how many fields of that name exist
 * (0: none, out is ""). Values longer than size are cut.
 */
int header_field(const char *block, size_t len, const char *name, char *out, size_t size);

/*
 * Call fn for each address (local@domain, comments and display names
 * removed) in an address-list value; returns how many were found, or -1
 * when the value does not parse.
 */
int header_addresses(const char *value, void (*fn)(const char *addr, void *arg), void *arg);

#endif
