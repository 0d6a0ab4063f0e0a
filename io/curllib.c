/* curllib — libcurl loaded on first use (curllib.h). */
#include "curllib.h"
#include "dynlib.h"

struct curllib_api curllib;

static const char *const names[] = {
#define CURLLIB_NAME(f) #f,
    CURLLIB_FUNCS(CURLLIB_NAME)
#undef CURLLIB_NAME
};

_Static_assert(sizeof curllib == sizeof names / sizeof *names * sizeof(void *),
               "struct curllib_api holds function pointers only");

static struct dynlib lib = {CURLLIB_SONAME, names, sizeof names / sizeof *names,
                            &curllib,       0,     ""};

int
curllib_load(struct herr *e)
{
    if (dynlib_load(&lib) == 0)
        return 0;
    return herr_set(e, HERR_IO, NULL,
                    "the Sent-folder copy needs %s (Debian: libcurl4): %s",
                    CURLLIB_SONAME, lib.why);
}
