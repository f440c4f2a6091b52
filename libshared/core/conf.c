/*
 * conf: declarative configuration tables over libconfig. Validation happens
 * once, at start; a service never runs on a half-understood file.
 */
#include "conf.h"
#include "alloc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct conf_file {
    config_t cfg;
    char *path;
};

static void conf_init_cfg(conf_file_t *cf)
{
    config_init(&cf->cfg);
    config_set_auto_convert(&cf->cfg, 1);
}

conf_file_t *conf_open(const char *path, char *err, size_t errlen)
{
    conf_file_t *cf = xcalloc(1, sizeof(*cf));
    conf_init_cfg(cf);
    cf->path = xstrdup(path);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        conf_close(&cf);
        return NULL;
    }
    fclose(f);
    /* read by name, so every setting knows its file for conf_where() */
    if (!config_read_file(&cf->cfg, path)) {
        snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&cf->cfg),
                 config_error_text(&cf->cfg));
        conf_close(&cf);
        return NULL;
    }
    return cf;
}

conf_file_t *conf_open_string(const char *name, const char *text, char *err, size_t errlen)
{
    conf_file_t *cf = xcalloc(1, sizeof(*cf));
    conf_init_cfg(cf);
    cf->path = xstrdup(name);
    if (!config_read_string(&cf->cfg, text)) {
        snprintf(err, errlen, "%s:%d: %s", name, config_error_line(&cf->cfg),
                 config_error_text(&cf->cfg));
        conf_close(&cf);
        return NULL;
    }
    return cf;
}

void conf_close(conf_file_t **p)
{
    conf_file_t *cf = *p;
    if (cf == NULL)
        return;
    config_destroy(&cf->cfg);
    free(cf->path);
    free(cf);
    *p = NULL;
}

const char *conf_path(const conf_file_t *cf)
{
    return cf->path;
}

const config_setting_t *conf_group(const conf_file_t *cf, const char *section)
{
    return config_lookup(&cf->cfg, section);
}

const char *conf_where(const config_setting_t *s, char *buf, size_t size)
{
    const char *file = s ? config_setting_source_file(s) : NULL;
    unsigned line = s ? config_setting_source_line(s) : 0;
    snprintf(buf, size, "%s:%u", file ? file : "?", line);
    return buf;
}

/* "file:line" of a setting; text read from memory has no file name of its own. */
static const char *setting_where(const conf_file_t *cf, const config_setting_t *s, char *buf,
                                 size_t size)
{
    const char *file = config_setting_source_file(s);
    snprintf(buf, size, "%s:%u", file ? file : cf->path, config_setting_source_line(s));
    return buf;
}

/* ---- value parsers ---- */

static int parse_scaled(const char *text, uint64_t *out, const char *const units[],
                        const uint64_t scale[], size_t nunits, uint64_t bare)
{
    while (isspace((unsigned char)*text))
        text++;
    if (!isdigit((unsigned char)*text))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    uint64_t mult = bare;
    if (*end) {
        size_t i;
        for (i = 0; i < nunits; i++)
            if (strcasecmp(end, units[i]) == 0)
                break;
        if (i == nunits)
            return -1;
        mult = scale[i];
    }
    if (mult && v > UINT64_MAX / mult)
        return -1;
    *out = (uint64_t)v * mult;
    return 0;
}

int conf_parse_duration(const char *text, uint64_t *ms)
{
    static const char *const units[] = {"ms", "s", "m", "h", "d"};
    static const uint64_t scale[] = {1, 1000, 60000, 3600000, 86400000};
    return parse_scaled(text, ms, units, scale, 5, 1000);
}

int conf_parse_size(const char *text, uint64_t *bytes)
{
    static const char *const units[] = {"b", "k", "kb", "m", "mb", "g", "gb"};
    static const uint64_t scale[] = {1, 1ull << 10, 1ull << 10, 1ull << 20, 1ull << 20,
                                     1ull << 30, 1ull << 30};
    return parse_scaled(text, bytes, units, scale, 7, 1);
}

void conf_strlist_free(conf_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void strlist_push(conf_strlist_t *l, const char *s)
{
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = xstrdup(s);
}

/* ---- one field ---- */

typedef struct conf_ctx {
    const conf_file_t *cf;
    const char *section;
    char *err;
    size_t errlen;
} conf_ctx_t;

static int field_error(conf_ctx_t *cx, const config_setting_t *s, const conf_field_t *f,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int field_error(conf_ctx_t *cx, const config_setting_t *s, const conf_field_t *f,
                       const char *fmt, ...)
{
    char where[512], reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (s)
        setting_where(cx->cf, s, where, sizeof(where));
    else
        sx_strlcpy(where, cx->cf->path, sizeof(where));
    snprintf(cx->err, cx->errlen, "%s: %s.%s: %s", where, cx->section, f->name, reason);
    return -1;
}

static int check_bounds(conf_ctx_t *cx, const config_setting_t *s, const conf_field_t *f,
                        long long v)
{
    if (f->min == 0 && f->max == 0)
        return 0;
    if (v < f->min || v > f->max)
        return field_error(cx, s, f, "%lld is out of range %lld..%lld", v, f->min, f->max);
    return 0;
}

/* A value given as a string or an integer, read as text for scaled types. */
static int scaled_value(conf_ctx_t *cx, const config_setting_t *s, const conf_field_t *f,
                        const char *text, uint64_t *out)
{
    int rc;
    if (s && config_setting_type(s) == CONFIG_TYPE_INT) {
        long long v = config_setting_get_int(s);
        if (v < 0)
            return field_error(cx, s, f, "must not be negative");
        *out = (uint64_t)v * (f->type == CONF_DURATION ? 1000u : 1u);
        return 0;
    }
    if (s && config_setting_type(s) == CONFIG_TYPE_INT64) {
        long long v = config_setting_get_int64(s);
        if (v < 0)
            return field_error(cx, s, f, "must not be negative");
        if (f->type == CONF_DURATION && (uint64_t)v > UINT64_MAX / 1000u)
            return field_error(cx, s, f, "value too large"); /* seconds that wrap as ms */
        *out = (uint64_t)v * (f->type == CONF_DURATION ? 1000u : 1u);
        return 0;
    }
    if (s && config_setting_type(s) != CONFIG_TYPE_STRING)
        return field_error(cx, s, f, "expected a %s", f->type == CONF_DURATION
                                                          ? "duration such as \"30s\""
                                                          : "size such as \"50M\"");
    if (f->type == CONF_DURATION)
        rc = conf_parse_duration(text, out);
    else
        rc = conf_parse_size(text, out);
    if (rc < 0)
        return field_error(cx, s, f, "\"%s\" is not a valid %s", text,
                           f->type == CONF_DURATION ? "duration (e.g. 250ms, 30s, 5m, 2h, 5d)"
                                                    : "size (e.g. 512, 64K, 50M, 1G)");
    return 0;
}

static int load_field(conf_ctx_t *cx, const config_setting_t *group, const conf_field_t *f,
                      void *out)
{
    const config_setting_t *s = group ? config_setting_lookup((config_setting_t *)group, f->name)
                                      : NULL;
    void *field = (char *)out + f->offset;

    /* a missing setting has no line of its own: name its section's */
    if (s == NULL && (f->flags & CONF_REQUIRED))
        return field_error(cx, group, f, "required setting is missing");

    switch (f->type) {
    case CONF_INT: {
        long long v = 0;
        if (s) {
            int t = config_setting_type(s);
            if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
                return field_error(cx, s, f, "expected an integer");
            v = config_setting_get_int64(s);
        } else if (f->def) {
            v = strtoll(f->def, NULL, 10);
        }
        if (check_bounds(cx, s, f, v) < 0)
            return -1;
        *(long long *)field = v;
        return 0;
    }
    case CONF_BOOL: {
        int v = 0;
        if (s) {
            if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                return field_error(cx, s, f, "expected true or false");
            v = config_setting_get_bool(s);
        } else if (f->def) {
            v = strcmp(f->def, "true") == 0;
        }
        *(int *)field = v;
        return 0;
    }
    case CONF_STRING: {
        const char *v = f->def ? f->def : "";
        if (s) {
            if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return field_error(cx, s, f, "expected a string");
            v = config_setting_get_string(s);
        }
        *(char **)field = xstrdup(v);
        return 0;
    }
    case CONF_STRLIST: {
        conf_strlist_t *l = field;
        l->v = NULL;
        l->n = 0;
        if (s == NULL) {
            if (f->def && *f->def)
                strlist_push(l, f->def);
            return 0;
        }
        if (config_setting_type(s) == CONFIG_TYPE_STRING) {
            strlist_push(l, config_setting_get_string(s));
            return 0;
        }
        if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
            config_setting_type(s) != CONFIG_TYPE_LIST)
            return field_error(cx, s, f, "expected a string or a list of strings");
        for (int i = 0; i < config_setting_length(s); i++) {
            const char *e = config_setting_get_string_elem(s, i);
            if (e == NULL) {
                conf_strlist_free(l);
                return field_error(cx, s, f, "element %d is not a string", i + 1);
            }
            strlist_push(l, e);
        }
        return 0;
    }
    case CONF_DURATION:
    case CONF_SIZE: {
        uint64_t v = 0;
        const char *text = s && config_setting_type(s) == CONFIG_TYPE_STRING
                               ? config_setting_get_string(s)
                               : f->def;
        if (s || f->def)
            if (scaled_value(cx, s, f, text ? text : "0", &v) < 0)
                return -1;
        if (v > (uint64_t)LLONG_MAX || check_bounds(cx, s, f, (long long)v) < 0)
            return v > (uint64_t)LLONG_MAX ? field_error(cx, s, f, "value too large") : -1;
        *(uint64_t *)field = v;
        return 0;
    }
    case CONF_CUSTOM: {
        char reason[512] = "invalid value";
        if (f->parse(s, field, reason, sizeof(reason)) < 0)
            return field_error(cx, s, f, "%s", reason);
        return 0;
    }
    }
    return field_error(cx, s, f, "unknown field type");
}

/* ---- unknown settings ---- */

static int field_known(const conf_field_t *table, const char *path)
{
    for (const conf_field_t *f = table; f->name; f++) {
        if (strcmp(f->name, path) == 0)
            return 1;
        /* a group that contains known fields: "tls" for "tls.cert" */
        if (strncmp(f->name, path, strlen(path)) == 0 && f->name[strlen(path)] == '.')
            return 2;
    }
    return 0;
}

static int check_unknown(conf_ctx_t *cx, const config_setting_t *group, const char *prefix,
                         const conf_field_t *table)
{
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, i);
        const char *name = config_setting_name(s);
        if (name == NULL)
            continue;
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name);
        int k = field_known(table, path);
        if (k == 0) {
            char where[512];
            snprintf(cx->err, cx->errlen, "%s: %s.%s: unknown setting",
                     setting_where(cx->cf, s, where, sizeof(where)), cx->section, path);
            return -1;
        }
        if (k == 2 && config_setting_type(s) != CONFIG_TYPE_GROUP) {
            /* "tls = 1;" where the table has tls.cert: its settings would go unread */
            char where[512];
            snprintf(cx->err, cx->errlen, "%s: %s.%s: expected a group { ... }",
                     setting_where(cx->cf, s, where, sizeof(where)), cx->section, path);
            return -1;
        }
        if (k == 2 && check_unknown(cx, s, path, table) < 0)
            return -1;
    }
    return 0;
}

int conf_section(const conf_file_t *cf, const char *section, const conf_field_t *table,
                 void *out, char *err, size_t errlen)
{
    conf_ctx_t cx = {.cf = cf, .section = section, .err = err, .errlen = errlen};
    const config_setting_t *group = config_lookup(&cf->cfg, section);
    if (group && config_setting_type(group) != CONFIG_TYPE_GROUP) {
        char where[512];
        snprintf(err, errlen, "%s: %s: expected a group { ... }",
                 setting_where(cf, group, where, sizeof(where)), section);
        return -1;
    }
    if (group && check_unknown(&cx, group, "", table) < 0)
        return -1;
    for (const conf_field_t *f = table; f->name; f++) {
        if (load_field(&cx, group, f, out) < 0) {
            conf_release(table, out);
            return -1;
        }
    }
    return 0;
}

void conf_release(const conf_field_t *table, void *out)
{
    for (const conf_field_t *f = table; f->name; f++) {
        void *field = (char *)out + f->offset;
        switch (f->type) {
        case CONF_STRING:
            free(*(char **)field);
            *(char **)field = NULL;
            break;
        case CONF_STRLIST:
            conf_strlist_free(field);
            break;
        case CONF_CUSTOM:
            if (f->release)
                f->release(field);
            break;
        default:
            break;
        }
    }
}
