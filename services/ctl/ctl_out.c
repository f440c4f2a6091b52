/*
 * ctl_out: how sendarixctl reports. With --json, stdout carries exactly
 * one JSON document, an {"error": ...} one when the command failed; the
 * sentence also goes to stderr, so scripts and people both see it.
 */
#include "ctl.h"
#include "ctl_json.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void emit_error_doc(ctl_t *ctl, const char *text)
{
    if (!ctl->json)
        return;
    json_t *doc = json_object();
    json_object_set_new(doc, "error", ctl_json_str(text));
    ctl_emit(ctl, doc);
}

int ctl_fail(ctl_t *ctl, const char *fmt, ...)
{
    char text[CTL_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    emit_error_doc(ctl, text);
    fprintf(ctl->err, "sendarixctl: %s\n", text);
    return CTL_FAIL;
}

int ctl_usage_error(ctl_t *ctl, const ctl_command_t *cmd, const char *fmt, ...)
{
    char text[CTL_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    emit_error_doc(ctl, text);
    fprintf(ctl->err, "sendarixctl: %s\n", text);
    if (cmd)
        ctl_print_usage(ctl->err, cmd);
    else
        fprintf(ctl->err, "Try 'sendarixctl help' for the list of commands.\n");
    return CTL_USAGE;
}

void ctl_emit(ctl_t *ctl, void *json_doc)
{
    json_t *doc = json_doc;
    json_dumpf(doc, ctl->out, JSON_INDENT(2));
    fputc('\n', ctl->out);
    fflush(ctl->out);
    json_decref(doc);
}
