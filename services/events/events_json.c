/*
 * events_json: Event -> JSON with jansson. Absent strings become "", an
 * absent reply null, so every object has every key.
 */
#include "events_json.h"
#include "core/alloc.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

/* Bytes from other services may not be UTF-8, which JSON needs: keep ASCII, mark the rest. */
static char *ascii_copy(const char *s)
{
    char *c = xstrdup(s);
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return c;
}

static json_t *str_or_empty(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j == NULL) {
        char *c = ascii_copy(s);
        j = json_string(c);
        free(c);
    }
    return j;
}

static void set_attr(json_t *attrs, const char *key, const char *value)
{
    if (json_object_set_new(attrs, key, str_or_empty(value)) == 0)
        return;
    char *c = ascii_copy(key);
    json_object_set_new(attrs, c, str_or_empty(value));
    free(c);
}

json_t *events_json_event(const PB(Event) * ev)
{
    char at[ISOTIME_SIZE];
    json_t *o = json_object();
    json_object_set_new(o, "id", str_or_empty(ev->id));
    json_object_set_new(o, "at", json_string(isotime_format(ev->at_ms, 1, at, sizeof(at))));
    json_object_set_new(o, "type", str_or_empty(ev->type));
    json_object_set_new(o, "service", str_or_empty(ev->service));
    json_object_set_new(o, "instance", str_or_empty(ev->instance));
    json_object_set_new(o, "message_id", str_or_empty(ev->message_id));
    json_object_set_new(o, "recipient", str_or_empty(ev->recipient));
    json_object_set_new(o, "rcpt_index", json_integer(ev->rcpt_index));
    json_object_set_new(o, "sender", str_or_empty(ev->sender));
    json_object_set_new(o, "tenant", str_or_empty(ev->tenant));
    if (ev->reply) {
        json_t *r = json_object();
        json_object_set_new(r, "code", json_integer(ev->reply->code));
        json_object_set_new(r, "enhanced", str_or_empty(ev->reply->enhanced));
        json_object_set_new(r, "text", str_or_empty(ev->reply->text));
        json_object_set_new(o, "reply", r);
    } else {
        json_object_set_new(o, "reply", json_null());
    }
    json_object_set_new(o, "attempt", json_integer(ev->attempt));
    json_object_set_new(o, "remote_host", str_or_empty(ev->remote_host));
    json_object_set_new(o, "session_id", str_or_empty(ev->session_id));
    json_t *attrs = json_object();
    for (size_t i = 0; i < ev->n_attrs; i++) {
        const PB(Attr) *a = ev->attrs[i];
        if (a && a->key && a->key[0])
            set_attr(attrs, a->key, a->value);
    }
    json_object_set_new(o, "attrs", attrs);
    return o;
}
