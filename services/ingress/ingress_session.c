/*
 * ingress_session: the ESMTP server state machine (RFC 5321) for one client
 * connection. Input is processed line by line from the connection's buffer,
 * so pipelined commands are answered in order; while an asynchronous step
 * runs (auth check, queue commit) the session stops reading and picks up
 * the buffered input when it completes. Each command has a check step that
 * validates and replies, apart from the step that acts. AUTH lives in
 * ingress_auth.c, DATA and BDAT in ingress_data.c.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SESSION_IN_LIMIT (256u << 10) /* unread input held while a step runs */
#define AUTH_LINE_MAX    12288

static const char *const state_names[] = {"connected", "ready", "mail", "rcpt", "data",
                                          "bdat",      "auth",  "tls",  "closing"};

const char *role_name(listener_role_t r)
{
    switch (r) {
    case ROLE_SUBMISSION:
        return "submission";
    case ROLE_SMTPS:
        return "smtps";
    case ROLE_LEGACY:
        return "legacy";
    }
    return "?";
}

void session_enter_state(session_t *s, session_state_t st)
{
    if (s->state != st)
        log_debug("sid=%s event=state from=%s to=%s", s->sid, state_names[s->state],
                  state_names[st]);
    s->state = st;
}

void session_reply(session_t *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 3)
        n = (int)sizeof(line) - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    conn_write(s->conn, line, (size_t)n);
}

static void session_free(session_t *s)
{
    ingress_t *ing = s->ing;
    loop_timer_stop(ing->svc->loop, &s->timer);
    limits_connection_close(ing, s->ip);
    data_abandon(s);
    if (s->req_id && s->req_client)
        bus_client_cancel(s->req_client, s->req_id);
    conn_destroy(&s->conn);
    buf_free(&s->body);
    buf_free(&s->header);
    buf_free(&s->scan_copy);
    conf_strlist_free(&s->domains);
    free(s->rcpts);
    if (s->prev)
        s->prev->next = s->next;
    else
        ing->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    ing->nsessions--;
    free(s);
}

void session_close(session_t *s)
{
    log_info("sid=%s event=disconnect ip=%s", s->sid, s->ip);
    session_free(s);
}

void session_close_all(ingress_t *ing)
{
    while (ing->sessions)
        session_free(ing->sessions);
}

/* ---- deadlines ---- */

static void session_timeout(loop_t *loop, void *arg)
{
    (void)loop;
    session_t *s = arg;
    log_info("sid=%s event=timeout state=%s ip=%s", s->sid, state_names[s->state], s->ip);
    session_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->ing->svc->relay.hostname);
    session_enter_state(s, SS_CLOSING);
    conn_close_after_flush(s->conn);
}

/* Restart the deadline for the current step: a whole command or a whole
 * DATA must finish within it, however slowly the bytes trickle in. */
void session_arm(session_t *s)
{
    uint64_t ms = s->state == SS_DATA || s->state == SS_BDAT ? s->ing->conf.data_timeout
                                                             : s->ing->conf.command_timeout;
    loop_timer_start(s->ing->svc->loop, &s->timer, ms);
}

/* ---- transaction ---- */

void session_reset_transaction(session_t *s)
{
    data_abandon(s);
    s->msgid[0] = '\0';
    s->mail_from[0] = '\0';
    s->smtputf8 = s->eightbit = 0;
    s->dsn_ret[0] = s->dsn_envid[0] = '\0';
    s->declared_size = 0;
    s->nrcpts = 0;
    s->data_error = 0;
    if (s->state == SS_MAIL || s->state == SS_RCPT || s->state == SS_DATA || s->state == SS_BDAT)
        session_enter_state(s, SS_READY);
}

/* ---- commands ---- */

typedef void (*cmd_fn)(session_t *s, char *args);

#define CMD_BEFORE_HELO 1u /* allowed before EHLO/HELO */
#define CMD_BEFORE_TLS  2u /* allowed on the submission role before STARTTLS */
#define CMD_JUNK        4u /* carries no message: counted against max_junk_commands */

typedef struct command {
    const char *name;
    cmd_fn fn;
    unsigned flags;
} command_t;

static int tls_available(const session_t *s)
{
    return s->ing->tls != NULL && !conn_is_tls(s->conn) && s->role != ROLE_SMTPS;
}

static int auth_offered(const session_t *s)
{
    return s->role != ROLE_LEGACY && conn_is_tls(s->conn);
}

static void cmd_ehlo_helo(session_t *s, char *args, int esmtp)
{
    while (*args == ' ')
        args++;
    char *end = args + strlen(args);
    while (end > args && end[-1] == ' ')
        *--end = '\0';
    if (*args == '\0' || strchr(args, ' ')) {
        session_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    sx_strlcpy(s->helo, args, sizeof(s->helo));
    s->esmtp = esmtp;
    session_reset_transaction(s);
    session_enter_state(s, SS_READY);
    const char *host = s->ing->svc->relay.hostname;
    if (!esmtp) {
        session_reply(s, "250 %s", host);
        return;
    }
    session_reply(s, "250-%s Hello %s [%s]", host, s->helo, s->ip);
    session_reply(s, "250-PIPELINING");
    session_reply(s, "250-SIZE %llu", (unsigned long long)s->ing->conf.max_message_size);
    session_reply(s, "250-8BITMIME");
    session_reply(s, "250-SMTPUTF8");
    session_reply(s, "250-ENHANCEDSTATUSCODES");
    session_reply(s, "250-DSN");
    if (tls_available(s))
        session_reply(s, "250-STARTTLS");
    if (auth_offered(s) && !s->authed)
        session_reply(s, "250-AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER");
    session_reply(s, "250 CHUNKING");
}

static void cmd_ehlo(session_t *s, char *args)
{
    cmd_ehlo_helo(s, args, 1);
}

static void cmd_helo(session_t *s, char *args)
{
    cmd_ehlo_helo(s, args, 0);
}

static void cmd_starttls(session_t *s, char *args)
{
    if (*args) {
        session_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (!tls_available(s)) {
        session_reply(s, "%s", conn_is_tls(s->conn) || s->role == ROLE_SMTPS
                                   ? "503 5.5.1 TLS already active"
                                   : "454 4.7.0 TLS not available");
        return;
    }
    session_reply(s, "220 2.0.0 Ready to start TLS");
    session_enter_state(s, SS_TLS);
    /* unread input is dropped by conn: nothing sent before the handshake
     * may be executed after it */
    if (conn_tls_accept(s->conn, s->ing->tls) < 0) {
        log_warn("sid=%s event=starttls_failed reason=setup", s->sid);
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
    }
}

int session_domain_allowed(const session_t *s, const char *domain)
{
    if (s->role == ROLE_LEGACY)
        return 1;
    for (size_t i = 0; i < s->domains.n; i++)
        if (strcasecmp(s->domains.v[i], domain) == 0)
            return 1;
    return 0;
}

static int sender_allowed(const session_t *s, const mail_addr_t *a)
{
    return a->is_null || session_domain_allowed(s, a->domain);
}

static void reply_address_error(session_t *s, addr_status_t st, const char *what)
{
    switch (st) {
    case ADDR_UTF8:
        session_reply(s, "553 5.6.7 %s: UTF-8 address requires SMTPUTF8", what);
        break;
    case ADDR_ROUTE:
        session_reply(s, "553 5.1.3 %s: %s", what, address_status_text(st));
        break;
    case ADDR_PARAMS:
        session_reply(s, "501 5.5.4 %s: malformed parameters", what);
        break;
    case ADDR_TOO_LONG:
        session_reply(s, "501 5.1.3 %s: address too long", what);
        break;
    default:
        session_reply(s, "501 5.1.%d %s: syntax error in mailbox address",
                      strcmp(what, "Sender") == 0 ? 7 : 3, what);
        break;
    }
}

/* MAIL passed every check: the transaction begins. */
static void mail_accept(session_t *s)
{
    id_new(s->msgid);
    session_enter_state(s, SS_MAIL);
    log_info("sid=%s msg=%s event=mail from=<%s> size=%llu", s->sid, s->msgid, s->mail_from,
             (unsigned long long)s->declared_size);
    session_reply(s, "250 2.1.0 Sender <%s> OK", s->mail_from);
}

static void mail_rate_done(session_t *s, int ok, const char *reply)
{
    if (ok) {
        mail_accept(s);
        return;
    }
    s->ing->rate_limited++;
    log_info("sid=%s event=rate_limited user=%s tenant=%s", s->sid, s->username, s->tenant);
    s->mail_from[0] = '\0';
    session_reply(s, "%s", reply);
}

static void cmd_mail(session_t *s, char *args)
{
    if (s->state != SS_READY) {
        session_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (s->role != ROLE_LEGACY && !s->authed) {
        session_reply(s, "530 5.7.0 Authentication required");
        return;
    }
    if (strncasecmp(args, "FROM:", 5) != 0) {
        session_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    mail_addr_t a;
    mail_params_t params;
    /* SMTPUTF8 is a parameter of this very command: look ahead for it */
    int utf8 = strcasestr(args + 5, " SMTPUTF8") != NULL;
    addr_status_t st = address_parse(args + 5, 1, utf8, &a, &params);
    if (st != ADDR_OK) {
        reply_address_error(s, st, "Sender");
        return;
    }
    uint64_t size = 0;
    int eightbit = 0;
    char ret[8] = "", envid[128] = "";
    for (size_t i = 0; i < params.n; i++) {
        const mail_param_t *p = &params.v[i];
        if (strcmp(p->key, "SIZE") == 0) {
            char *end;
            unsigned long long v = strtoull(p->value, &end, 10);
            if (!p->has_value || *end || !isdigit((unsigned char)p->value[0])) {
                session_reply(s, "501 5.5.4 Bad SIZE parameter");
                return;
            }
            size = v;
        } else if (strcmp(p->key, "BODY") == 0) {
            if (strcasecmp(p->value, "8BITMIME") == 0)
                eightbit = 1;
            else if (strcasecmp(p->value, "7BIT") != 0) {
                session_reply(s, "501 5.5.4 Unsupported BODY type %s", p->value);
                return;
            }
        } else if (strcmp(p->key, "SMTPUTF8") == 0) {
            if (p->has_value) {
                session_reply(s, "501 5.5.4 SMTPUTF8 takes no value");
                return;
            }
        } else if (strcmp(p->key, "RET") == 0) {
            if (strcasecmp(p->value, "FULL") != 0 && strcasecmp(p->value, "HDRS") != 0) {
                session_reply(s, "501 5.5.4 RET must be FULL or HDRS");
                return;
            }
            sx_strlcpy(ret, p->value, sizeof(ret));
            for (char *c = ret; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        } else if (strcmp(p->key, "ENVID") == 0) {
            char decoded[128];
            if (!p->has_value || strlen(p->value) > 100 ||
                address_xtext_decode(p->value, decoded, sizeof(decoded)) < 0) {
                session_reply(s, "501 5.5.4 Bad ENVID parameter");
                return;
            }
            sx_strlcpy(envid, p->value, sizeof(envid));
        } else if (strcmp(p->key, "AUTH") == 0) {
            /* RFC 4954 AUTH=: accepted and ignored, we know who logged in */
        } else {
            session_reply(s, "555 5.5.4 Unsupported parameter %s", p->key);
            return;
        }
    }
    if (size > s->ing->conf.max_message_size) {
        session_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    if (!sender_allowed(s, &a)) {
        log_info("sid=%s event=sender_refused user=%s from=<%s>", s->sid, s->username, a.full);
        session_reply(s, "553 5.7.1 Sender address <%s> not allowed: domain %s is not a "
                         "sending domain of this login",
                      a.full, a.domain);
        return;
    }
    s->queue = ingress_pick_queue(s->ing, NULL);
    if (s->queue == NULL) {
        session_reply(s, "451 4.3.0 Queue unavailable, try again later");
        return;
    }
    sx_strlcpy(s->mail_from, a.full, sizeof(s->mail_from));
    s->smtputf8 = utf8;
    s->eightbit = eightbit;
    s->declared_size = size;
    sx_strlcpy(s->dsn_ret, ret, sizeof(s->dsn_ret));
    sx_strlcpy(s->dsn_envid, envid, sizeof(s->dsn_envid));
    s->nrcpts = 0;
    if (auth_rate_check(s, mail_rate_done) < 0)
        mail_accept(s);
}

/* NEVER, or a comma list of SUCCESS, FAILURE, DELAY without empty items (RFC 3461 4.1). */
static int notify_valid(const char *v)
{
    if (strcasecmp(v, "NEVER") == 0)
        return 1;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!((n == 7 && strncasecmp(p, "SUCCESS", 7) == 0) ||
              (n == 7 && strncasecmp(p, "FAILURE", 7) == 0) ||
              (n == 5 && strncasecmp(p, "DELAY", 5) == 0)))
            return 0;
        if (comma == NULL)
            return 1;
        p = comma + 1;
    }
}

static void cmd_rcpt(session_t *s, char *args)
{
    if (s->state != SS_MAIL && s->state != SS_RCPT) {
        session_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (strncasecmp(args, "TO:", 3) != 0) {
        session_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (s->role == ROLE_LEGACY &&
        !cidr_match_any(s->ing->legacy_nets, s->ing->nlegacy_nets, &s->peer)) {
        session_reply(s, "550 5.7.1 Relay access denied");
        return;
    }
    mail_addr_t a;
    mail_params_t params;
    addr_status_t st = address_parse(args + 3, 0, s->smtputf8, &a, &params);
    if (st != ADDR_OK) {
        reply_address_error(s, st, "Recipient");
        return;
    }
    if ((long long)s->nrcpts >= s->ing->conf.max_recipients) {
        session_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    rcpt_t r = {0};
    for (size_t i = 0; i < params.n; i++) {
        const mail_param_t *p = &params.v[i];
        if (strcmp(p->key, "NOTIFY") == 0) {
            if (!p->has_value || !notify_valid(p->value)) {
                session_reply(s, "501 5.5.4 Bad NOTIFY parameter");
                return;
            }
            sx_strlcpy(r.notify, p->value, sizeof(r.notify));
        } else if (strcmp(p->key, "ORCPT") == 0) {
            if (!p->has_value || strchr(p->value, ';') == NULL) {
                session_reply(s, "501 5.5.4 Bad ORCPT parameter");
                return;
            }
            sx_strlcpy(r.orcpt, p->value, sizeof(r.orcpt));
        } else {
            session_reply(s, "555 5.5.4 Unsupported parameter %s", p->key);
            return;
        }
    }
    sx_strlcpy(r.address, a.full, sizeof(r.address));
    if (s->nrcpts == s->rcpts_cap) {
        s->rcpts_cap = s->rcpts_cap ? s->rcpts_cap * 2 : 4;
        s->rcpts = xrealloc(s->rcpts, s->rcpts_cap * sizeof(*s->rcpts));
    }
    s->rcpts[s->nrcpts++] = r;
    session_enter_state(s, SS_RCPT);
    session_reply(s, "250 2.1.5 Recipient <%s> OK", a.full);
}

static void cmd_data(session_t *s, char *args)
{
    if (*args) {
        session_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == SS_MAIL) {
        session_reply(s, "554 5.5.1 Error: no valid recipients");
        return;
    }
    if (s->bdat_open) {
        session_reply(s, "503 5.5.1 Error: DATA not allowed after BDAT");
        return;
    }
    if (s->state != SS_RCPT) {
        session_reply(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    data_begin(s);
}

static void cmd_rset(session_t *s, char *args)
{
    (void)args;
    session_reset_transaction(s);
    session_reply(s, "250 2.0.0 OK");
}

static void cmd_noop(session_t *s, char *args)
{
    (void)args;
    session_reply(s, "250 2.0.0 OK");
}

static void cmd_quit(session_t *s, char *args)
{
    (void)args;
    session_reply(s, "221 2.0.0 Bye");
    session_enter_state(s, SS_CLOSING);
    conn_close_after_flush(s->conn);
}

static void cmd_vrfy(session_t *s, char *args)
{
    (void)args;
    session_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message");
}

static void cmd_help(session_t *s, char *args)
{
    (void)args;
    session_reply(s, "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET "
                     "NOOP VRFY HELP QUIT");
}

static void cmd_auth(session_t *s, char *args)
{
    auth_command(s, args);
}

static void cmd_bdat(session_t *s, char *args)
{
    bdat_command(s, args);
}

static const command_t commands[] = {
    {"EHLO", cmd_ehlo, CMD_BEFORE_HELO | CMD_BEFORE_TLS | CMD_JUNK},
    {"HELO", cmd_helo, CMD_BEFORE_HELO | CMD_BEFORE_TLS | CMD_JUNK},
    {"STARTTLS", cmd_starttls, CMD_BEFORE_TLS},
    {"AUTH", cmd_auth, 0},
    {"MAIL", cmd_mail, 0},
    {"RCPT", cmd_rcpt, 0},
    {"DATA", cmd_data, 0},
    {"BDAT", cmd_bdat, 0},
    {"RSET", cmd_rset, CMD_BEFORE_HELO | CMD_BEFORE_TLS | CMD_JUNK},
    {"NOOP", cmd_noop, CMD_BEFORE_HELO | CMD_BEFORE_TLS | CMD_JUNK},
    {"QUIT", cmd_quit, CMD_BEFORE_HELO | CMD_BEFORE_TLS},
    {"VRFY", cmd_vrfy, CMD_JUNK},
    {"HELP", cmd_help, CMD_BEFORE_HELO | CMD_BEFORE_TLS | CMD_JUNK},
    {NULL, NULL, 0},
};

static void session_command(session_t *s, char *line)
{
    char *sp = line;
    while (*sp && *sp != ' ')
        sp++;
    size_t nlen = (size_t)(sp - line);
    char *args = *sp ? sp + 1 : sp;
    const command_t *cmd = NULL;
    for (const command_t *c = commands; c->name; c++) {
        if (strlen(c->name) == nlen && strncasecmp(c->name, line, nlen) == 0) {
            cmd = c;
            break;
        }
    }
    if (cmd == NULL) {
        session_reply(s, "500 5.5.1 Error: command not recognized");
        limits_junk(s);
        return;
    }
    if (cmd->flags & CMD_JUNK && limits_junk(s))
        return;
    /* BDAT carries its chunk whatever the verdict: bdat_command consumes it */
    if (cmd->fn == cmd_bdat) {
        cmd->fn(s, args);
        return;
    }
    if (s->role == ROLE_SUBMISSION && !conn_is_tls(s->conn) && !(cmd->flags & CMD_BEFORE_TLS)) {
        session_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->state == SS_CONNECTED && !(cmd->flags & CMD_BEFORE_HELO)) {
        session_reply(s, "503 5.5.1 Error: send EHLO or HELO first");
        return;
    }
    cmd->fn(s, args);
}

/* ---- input ---- */

/* Take one command line off the input; 1 with line filled, 0 when incomplete. */
static int next_line(session_t *s, char *line, size_t size)
{
    buf_t *in = conn_in(s->conn);
    for (;;) {
        long lf = buf_find_lf(in, 0);
        size_t max = (size_t)s->ing->conf.max_line;
        /* RFC 4954 4: AUTH lines (bearer tokens) may reach 12288 octets */
        if (s->state == SS_AUTH ||
            (buf_used(in) >= 5 && strncasecmp(buf_head(in), "AUTH ", 5) == 0))
            max = AUTH_LINE_MAX;
        if (lf < 0) {
            if (buf_used(in) >= max) {
                /* an over-long line: drop what we have, and the rest up to LF */
                if (!s->discarding)
                    log_info("sid=%s event=line_too_long", s->sid);
                s->discarding = 1;
                buf_consume(in, buf_used(in));
            }
            return 0;
        }
        size_t len = (size_t)lf;
        const char *p = buf_head(in);
        /* the limit counts the whole line, CRLF included (RFC 5321 4.5.3.1.4) */
        if (s->discarding || len + 1 > max) {
            buf_consume(in, len + 1);
            s->discarding = 0;
            session_reply(s, "500 5.5.2 Error: line too long");
            continue;
        }
        if (len && p[len - 1] == '\r')
            len--;
        if (len >= size)
            len = size - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        buf_consume(in, (size_t)lf + 1);
        return 1;
    }
}

/* Process buffered input until it runs out or a step must wait. */
static void session_process(session_t *s)
{
    char line[AUTH_LINE_MAX + 1];
    while (!s->waiting && s->conn && s->state != SS_CLOSING && s->state != SS_TLS) {
        if (s->state == SS_DATA || s->state == SS_BDAT) {
            if (!data_feed(s))
                break;
            continue;
        }
        if (!next_line(s, line, sizeof(line)))
            break;
        session_arm(s);
        if (s->state == SS_AUTH) {
            auth_continue(s, line);
            continue;
        }
        if (line[0] == '\0') {
            session_reply(s, "500 5.5.2 Error: bad syntax");
            continue;
        }
        for (size_t i = 0; line[i]; i++) {
            if ((unsigned char)line[i] < 32 && line[i] != '\t') {
                line[i] = '\0'; /* a NUL or control byte ends the command */
                break;
            }
        }
        session_command(s, line);
    }
    if (s->conn && s->state != SS_CLOSING)
        conn_read_pause(s->conn, s->waiting);
}

void session_resume(session_t *s)
{
    s->waiting = 0;
    session_arm(s);
    session_process(s);
}

static void on_data(conn_t *c, void *arg)
{
    (void)c;
    session_process(arg);
}

static void on_close(conn_t *c, int err, void *arg)
{
    (void)c;
    session_t *s = arg;
    if (err && s->state != SS_CLOSING)
        log_info("sid=%s event=connection_lost err=%d state=%s", s->sid, err,
                 state_names[s->state]);
    session_close(s);
}

static void on_tls(conn_t *c, int ok, const char *why, void *arg)
{
    session_t *s = arg;
    if (!ok) {
        log_info("sid=%s event=tls_failed ip=%s reason=\"%s\"", s->sid, s->ip, why ? why : "");
        return; /* conn reports the close next */
    }
    log_info("sid=%s event=tls version=%s cipher=%s", s->sid, conn_tls_version(c),
             conn_tls_cipher(c));
    if (s->role == ROLE_SMTPS && s->state == SS_CONNECTED) {
        session_reply(s, "220 %s ESMTP Sendarix", s->ing->svc->relay.hostname);
        return;
    }
    /* RFC 3207: forget everything learnt before the handshake */
    s->helo[0] = '\0';
    s->esmtp = 0;
    session_reset_transaction(s);
    session_enter_state(s, SS_CONNECTED);
    session_arm(s);
}

static const conn_handlers_t session_handlers = {
    .on_data = on_data,
    .on_close = on_close,
    .on_tls = on_tls,
};

void session_start(ingress_t *ing, int fd, const sock_addr_t *peer, listener_role_t role)
{
    session_t *s = xcalloc(1, sizeof(*s));
    s->ing = ing;
    s->role = role;
    s->peer = *peer;
    id_session(s->sid);
    sock_addr_ip(peer, s->ip, sizeof(s->ip));
    buf_init(&s->body, 0);
    buf_init(&s->header, 0);
    buf_init(&s->scan_copy, 0);
    loop_timer_init(&s->timer, session_timeout, s);
    loop_timer_init(&s->queue_retry, data_commit_retry, s);
    s->conn = conn_new(ing->svc->loop, fd, 0, SESSION_IN_LIMIT, &session_handlers, s);
    if (s->conn == NULL) {
        free(s);
        return;
    }
    s->next = ing->sessions;
    if (ing->sessions)
        ing->sessions->prev = s;
    ing->sessions = s;
    ing->nsessions++;
    ing->connections++;
    log_info("sid=%s event=connect ip=%s role=%s", s->sid, s->ip, role_name(role));

    const char *host = ing->svc->relay.hostname;
    if (limits_connection_open(ing, s->ip) < 0) {
        log_info("sid=%s event=refused ip=%s reason=connections_per_ip", s->sid, s->ip);
        session_reply(s, "421 4.7.0 %s Too many connections from your address, try again later",
                      host);
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
        return;
    }
    if ((long long)ing->nsessions > ing->conf.max_connections) {
        session_reply(s, "421 4.7.0 %s Too many connections, try again later", host);
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
        return;
    }
    if (role == ROLE_LEGACY && !cidr_match_any(ing->legacy_nets, ing->nlegacy_nets, peer)) {
        log_info("sid=%s event=refused ip=%s reason=not_allowlisted", s->sid, s->ip);
        session_reply(s, "554 5.7.1 %s Access denied: this port only serves allowlisted "
                         "networks",
                      host);
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
        return;
    }
    if (role == ROLE_LEGACY)
        sx_strlcpy(s->tenant, ing->conf.legacy_tenant, sizeof(s->tenant));
    session_arm(s);
    if (role == ROLE_SMTPS) {
        if (ing->tls == NULL || conn_tls_accept(s->conn, ing->tls) < 0) {
            session_close(s);
            return;
        }
        return; /* greeting after the handshake */
    }
    session_reply(s, "220 %s ESMTP Sendarix", host);
}
