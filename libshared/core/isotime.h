/*
 * ctl_time: ISO 8601 times in UTC for sendarixctl: formatting the times
 * it prints and parsing --since and --until; and durations (--grace). Only the forms people
 * type are accepted: a date, or a date and time with optional seconds,
 * fraction and zone (Z or +HH:MM); everything else is refused.
 */
#ifndef SX_CTL_TIME_H
#define SX_CTL_TIME_H

#include <stddef.h>
#include <stdint.h>

#define ISOTIME_SIZE 32

/* "2024-05-01T12:00:00.123Z" (or without ".123"); returns out. */
const char *isotime_format(uint64_t ms, int with_ms, char *out, size_t size);
/* 0 and *ms (milliseconds since the epoch, UTC) on success, -1 when malformed. */
int isotime_parse(const char *text, uint64_t *ms);

/*
 * A duration in whole seconds: digits with an optional unit s, m, h or d
 * ("30s", "5m", "2h", "1d"; bare digits are seconds; "0" is none). -1 when
 * malformed or above max_s.
 */
int ctl_duration_parse(const char *text, uint64_t max_s, uint64_t *seconds);

#endif
