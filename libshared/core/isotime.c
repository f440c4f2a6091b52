/*
 * isotime: ISO 8601 formatting and a strict parser, no locale, no TZ.
 */
#include "core/isotime.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define YEAR_MIN 1970
#define YEAR_MAX 9999

const char *isotime_format(uint64_t ms, int with_ms, char *out, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, size, "invalid");
        return out;
    }
    if (with_ms)
        snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
    else
        snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return out;
}

/* n digits at *p into *v; advances p. */
static int digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        x = x * 10 + (c - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

static int leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

int isotime_parse(const char *text, uint64_t *out)
{
    const char *p = text;
    int y, mo, d, h = 0, mi = 0, s = 0, frac_ms = 0, off_min = 0;
    if (digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 || *p++ != '-' ||
        digits(&p, 2, &d) < 0)
        return -1;
    if (y < YEAR_MIN || y > YEAR_MAX || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0)
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &s) < 0)
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int n = 0;
                for (; *p >= '0' && *p <= '9'; p++, n++)
                    if (n < 3)
                        frac_ms = frac_ms * 10 + (*p - '0');
                if (n == 0)
                    return -1;
                for (; n < 3; n++)
                    frac_ms *= 10;
            }
        }
        if (h > 23 || mi > 59 || s > 60)
            return -1;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (digits(&p, 2, &oh) < 0)
                return -1;
            if (*p == ':')
                p++;
            if (*p && digits(&p, 2, &om) < 0)
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            off_min = sign * (oh * 60 + om);
        }
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    long long secs = (long long)timegm(&tm) - (long long)off_min * 60;
    if (secs < 0)
        return -1;
    *out = (uint64_t)secs * 1000u + (uint64_t)frac_ms;
    return 0;
}

int ctl_duration_parse(const char *text, uint64_t max_s, uint64_t *seconds)
{
    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    uint64_t v = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    uint64_t unit = 1;
    if (*p != '\0') {
        static const struct {
            char c;
            uint64_t s;
        } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
        size_t i = 0;
        while (i < sizeof(units) / sizeof(units[0]) && units[i].c != *p)
            i++;
        if (i == sizeof(units) / sizeof(units[0]) || p[1] != '\0')
            return -1;
        unit = units[i].s;
    }
    if (v > max_s / unit)
        return -1;
    *seconds = v * unit;
    return 0;
}
