/*
 * rscript — Herald's Redis scripts: one table, built from the files in redis/.
 *
 * Every Lua script Herald runs in Redis is a file in redis/ (shared
 * functions in redis/lib/, taken in by a "--! include" line). The build
 * (scripts/embed_lua.sh) expands each into build/gen/redis/NAME.lua —
 * the text Redis runs and the tests load — and into a row of `rscripts`,
 * indexed by RS_NAME (rscript_ids.h, generated): the name, how many keys
 * it takes (-1: it varies, the caller says), the text and its SHA-1.
 * The header of each file says what its KEYS and ARGV are.
 *
 * Key names are never made inside a script: the caller passes every key
 * (KEYS), or, for keys named after data the script reads (a job's
 * ledger, an organisation's staged jobs, a dead worker's processing
 * list), the stem that keys.h builds, which the script completes with
 * the id.
 *
 * Running them: the worker loads every script at each connect and sends
 * EVALSHA (worker/queue.h: queue_script); libherald sends EVALSHA and
 * loads the script when Redis answers NOSCRIPT (producer/libherald.c).
 */
#ifndef HERALD_RSCRIPT_H
#define HERALD_RSCRIPT_H

#include "rscript_ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rscript {
    const char *name; /* the file's name without ".lua" */
    int nkeys;        /* -1: varies */
    size_t len;       /* of src */
    const char *sha;  /* 40 hex digits */
    const char *src;
};

extern const struct rscript rscripts[RS_COUNT];

/* The command "EVALSHA <sha> <nkeys> argv..." of script `id` into av and
 * al (argc + 3 entries each; `nk` holds the key count's digits): argv is
 * its nkeys keys, then its arguments (lens NULL: strlen). A key count
 * other than the script's header says is a bug: abort. */
static inline void
rscript_command(enum rscript_id id, int nkeys, int argc, const char **argv,
                const size_t *lens, char nk[16], const char **av, size_t *al)
{
    if (rscripts[id].nkeys >= 0 && rscripts[id].nkeys != nkeys)
        abort();
    snprintf(nk, 16, "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = rscripts[id].sha;
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
}

#endif
