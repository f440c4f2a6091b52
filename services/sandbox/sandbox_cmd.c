/*
 * sandbox_cmd: SMTP command line parsing for the sandbox. Every function
 * here takes bytes a client sent and refuses what does not fit the grammar.
 */
#include "sandbox_cmd.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define CMD_NUMBER_DIGITS_MAX 19 /* fits in uint64_t without overflow checks per digit */

cmd_line_status_t cmd_line_take(const char *p, size_t len, char out[CMD_LINE_MAX])
{
    if (len > 0 && p[len - 1] == '\r')
        len--;
    if (len >= CMD_LINE_MAX)
        len = CMD_LINE_MAX - 1;
    cmd_line_status_t st = CMD_LINE_OK;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            st = CMD_LINE_CONTROL;
        out[i] = (char)c;
    }
    out[len] = '\0';
    return st;
}

void cmd_split(const char *line, char verb[CMD_VERB_MAX], const char **args)
{
    size_t i = 0, j = 0;
    while (line[i] == ' ')
        i++;
    while (line[i] && line[i] != ' ' && line[i] != '\t') {
        if (j + 1 < CMD_VERB_MAX)
            verb[j++] = (char)toupper((unsigned char)line[i]);
        else
            verb[0] = '?'; /* too long to be a verb: match nothing */
        i++;
    }
    verb[j] = '\0';
    while (line[i] == ' ' || line[i] == '\t')
        i++;
    *args = line + i;
}

const char *cmd_after_keyword(const char *args, const char *keyword)
{
    size_t n = strlen(keyword);
    if (strncasecmp(args, keyword, n) != 0)
        return NULL;
    const char *p = args + n;
    while (*p == ' ')
        p++;
    return p;
}

int cmd_number(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = 0;
    for (; text[n]; n++) {
        if (!isdigit((unsigned char)text[n]) || n >= CMD_NUMBER_DIGITS_MAX)
            return -1;
        v = v * 10u + (uint64_t)(text[n] - '0');
    }
    if (n == 0)
        return -1;
    *out = v;
    return 0;
}

int cmd_bdat_parse(const char *args, uint64_t *size, int *last)
{
    char num[CMD_NUMBER_DIGITS_MAX + 2];
    size_t n = 0;
    while (args[n] && args[n] != ' ') {
        if (n + 1 >= sizeof(num))
            return -1;
        num[n] = args[n];
        n++;
    }
    num[n] = '\0';
    if (cmd_number(num, size) < 0)
        return -1;
    const char *p = args + n;
    while (*p == ' ')
        p++;
    *last = 0;
    if (*p == '\0')
        return 0;
    if (strncasecmp(p, "LAST", 4) != 0)
        return -1;
    p += 4;
    while (*p == ' ')
        p++;
    if (*p != '\0')
        return -1;
    *last = 1;
    return 0;
}
