/* pqlib — libpq loaded on first use (pqlib.h). */
#include "pqlib.h"
#include "dynlib.h"

struct pqlib_api pqlib;

static const char *const names[] = {
#define PQLIB_NAME(f) #f,
    PQLIB_FUNCS(PQLIB_NAME)
#undef PQLIB_NAME
};

_Static_assert(sizeof pqlib == sizeof names / sizeof *names * sizeof(void *),
               "struct pqlib_api holds function pointers only");

static struct dynlib lib = {PQLIB_SONAME, names, sizeof names / sizeof *names,
                            &pqlib,       0,     ""};

int
pqlib_load(struct herr *e)
{
    if (dynlib_load(&lib) == 0)
        return 0;
    return herr_set(e, HERR_STORE, "HERALD_MC",
                    "the PostgreSQL store needs %s (Debian: libpq5): %s",
                    PQLIB_SONAME, lib.why);
}
