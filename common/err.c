#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *
herr_str(int code)
{
    switch (code) {
    case HERR_OK:
        return "ok";
    case HERR_INVALID:
        return "invalid input";
    case HERR_TOOBIG:
        return "input too large";
    case HERR_NOTFOUND:
        return "not found";
    case HERR_IO:
        return "i/o error";
    case HERR_STORE:
        return "message center store error";
    case HERR_REDIS:
        return "redis error";
    case HERR_TEMP:
        return "temporary failure";
    case HERR_PERM:
        return "permanent failure";
    case HERR_EXISTS:
        return "already exists";
    }
    return "unknown error";
}

int
herr_set(struct herr *e, int code, const char *field, const char *fmt, ...)
{
    if (e == NULL)
        return code;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

void
herr_format(const struct herr *e, char *out, size_t outlen)
{
    if (e->field[0])
        snprintf(out, outlen, "%s: %s", e->field, e->msg);
    else
        snprintf(out, outlen, "%s", e->msg);
}
