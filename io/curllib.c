/* curllib — libcurl loaded on first use (curllib.h). */
#include "curllib.h"
#include "dynlib.h"

struct curllib_api curllib;

DYNLIB_TABLE(lib, curllib, CURLLIB_SONAME, CURLLIB_FUNCS);

int
curllib_load(struct herr *e)
{
    if (dynlib_load(&lib) == 0)
        return 0;
    return herr_set(e, HERR_IO, NULL,
                    "the Sent-folder copy needs %s (Debian: libcurl4): %s",
                    CURLLIB_SONAME, lib.why);
}
