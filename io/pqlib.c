/* pqlib — libpq loaded on first use (pqlib.h). */
#include "pqlib.h"
#include "dynlib.h"

struct pqlib_api pqlib;

DYNLIB_TABLE(lib, pqlib, PQLIB_SONAME, PQLIB_FUNCS);

int
pqlib_load(struct herr *e)
{
    if (dynlib_load(&lib) == 0)
        return 0;
    return herr_set(e, HERR_STORE, "HERALD_MC",
                    "the PostgreSQL store needs %s (Debian: libpq5): %s",
                    PQLIB_SONAME, lib.why);
}
