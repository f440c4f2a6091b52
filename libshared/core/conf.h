/*
 * conf: configuration through libconfig, one declarative table per service
 * section (name, type, default, bounds, doc), in the manner of Redis's
 * config.c. conf_section() fills a struct from one section of the file,
 * applies defaults, checks types and bounds, and refuses settings it does not
 * know, each error naming the file, the line and the reason. Durations accept
 * "250ms", "30s", "5m", "2h", "5d"; sizes accept "512", "64K", "50M", "1G".
 */
#ifndef SX_CONF_H
#define SX_CONF_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CONF_INT,      /* long long */
    CONF_BOOL,     /* int */
    CONF_STRING,   /* char *, owned */
    CONF_STRLIST,  /* conf_strlist_t: a string or a list of strings */
    CONF_DURATION, /* uint64_t milliseconds; plain integers are seconds */
    CONF_SIZE,     /* uint64_t bytes */
    CONF_CUSTOM,   /* parsed by the field's callback */
} conf_type_t;

#define CONF_REQUIRED 1u /* no default: the setting must be present */

typedef struct conf_strlist {
    char **v;
    size_t n;
} conf_strlist_t;

/*
 * A custom parser gets the setting (NULL when absent from the file) and the
 * field to fill. On error it writes a reason (without file and line, which
 * conf adds) and returns -1. It may own memory: release() frees it.
 */
typedef int (*conf_parse_fn)(const config_setting_t *s, void *field, char *err, size_t errlen);
typedef void (*conf_release_fn)(void *field);

typedef struct conf_field {
    const char *name; /* relative to the section; dots for nested groups: "tls.cert" */
    conf_type_t type;
    size_t offset;
    const char *def;  /* default, written as in the file; NULL: empty/zero */
    long long min, max; /* bounds for INT, DURATION (ms), SIZE; min == max == 0: none */
    unsigned flags;
    conf_parse_fn parse;
    conf_release_fn release;
    const char *doc;
} conf_field_t;

typedef struct conf_file conf_file_t;

/* Read and parse a file; NULL with err set ("file:line: reason") on failure. */
conf_file_t *conf_open(const char *path, char *err, size_t errlen);
/* The same, from text in memory (tests); name is used in messages. */
conf_file_t *conf_open_string(const char *name, const char *text, char *err, size_t errlen);
void conf_close(conf_file_t **cf);
const char *conf_path(const conf_file_t *cf);

/* The raw group for a section (for services that walk lists themselves). */
const config_setting_t *conf_group(const conf_file_t *cf, const char *section);

/*
 * Fill out (which the caller has zeroed) from section (a top-level group, may be absent: defaults apply).
 * 0 on success; -1 with err "file:line: section.name: reason".
 */
int conf_section(const conf_file_t *cf, const char *section, const conf_field_t *table,
                 void *out, char *err, size_t errlen);

/* Free what conf_section allocated in out. */
void conf_release(const conf_field_t *table, void *out);

/* Parsers exposed for custom fields and tests. */
int conf_parse_duration(const char *text, uint64_t *ms);
int conf_parse_size(const char *text, uint64_t *bytes);
void conf_strlist_free(conf_strlist_t *l);

/* "file:line" of a setting, for messages from custom parsers. */
const char *conf_where(const config_setting_t *s, char *buf, size_t size);

#endif
