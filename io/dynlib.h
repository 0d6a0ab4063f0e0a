/*
 * dynlib — a shared library's functions, loaded on first use (dlopen,
 * dlsym). The tables of io/pqlib.h and io/curllib.h are built on it.
 *
 * A struct dynlib names the library (its soname), the functions wanted
 * and where their addresses go: `slots`, an array of n function pointers
 * (a struct of nothing but function pointers, as the tables are).
 * dynlib_load() is safe from any thread and any number of times: the
 * first call loads (all or nothing), and every call returns 0 when the
 * slots are filled, or -1 with `why` saying what failed (the same every
 * time). A loaded library stays loaded for the life of the process.
 */
#ifndef HERALD_DYNLIB_H
#define HERALD_DYNLIB_H

#include <stddef.h>

struct dynlib {
    const char *soname;
    const char *const *names; /* n function names */
    size_t n;
    void *slots; /* n function pointers, filled on success */
    int state;   /* 0: not tried, 1: loaded, -1: failed */
    char why[256];
};

int dynlib_load(struct dynlib *d);

/* Defines `static struct dynlib var` for the table `api` (a struct with
 * one function pointer per name of the X-macro list FUNCS, in order):
 * its names, and a check that the struct holds those pointers only. */
#define DYNLIB_NAME_(f) #f,
#define DYNLIB_TABLE(var, api, soname, FUNCS)                                  \
    static const char *const var##_names[] = {FUNCS(DYNLIB_NAME_)};            \
    _Static_assert(sizeof(api) == sizeof var##_names / sizeof *var##_names *   \
                                      sizeof(void *),                          \
                   #api " holds function pointers only");                      \
    static struct dynlib var = {                                               \
        soname, var##_names, sizeof var##_names / sizeof *var##_names,         \
        &(api), 0,           ""}

#endif
