/*
 * schemes — this worker's view of the Email Sending Schemes (SPEC §4
 * path 1; storage contract in common/scheme.h).
 *
 * The table is reloaded (HGETALL <p>:schemes) whenever
 * <p>:schemes:version moves; schemes_poll() checks it and is called about
 * once a second, so a change reaches the worker within about a second.
 * Each scheme's sealed password is opened with the key in
 * HERALD_SECRET_KEY_FILE and held only in this process's memory, as a
 * secret of common/seal.h: never on the heap, excluded from core dumps,
 * wiped when the last reference goes (the table's at reload and free; a
 * job's route takes its own). A scheme whose password cannot be opened
 * (no key, the wrong key) stays in the table, unusable, with the reason.
 *
 * A refused login (535/534) is recorded with schemes_mark_failed: the
 * local entry at once (no further login from this worker), Redis by
 * compare-and-set so the fleet sees it at its next poll and `scheme list`
 * shows it; a scheme updated meanwhile keeps its new credentials.
 */
#ifndef HERALD_SCHEMES_H
#define HERALD_SCHEMES_H

#include "err.h"
#include "queue.h"
#include "scheme.h"
#include "settings.h"

struct scheme_entry {
    struct scheme *s;
    char *json;     /* the stored value, for compare-and-set */
    char *password; /* clear, a secret (seal.h) the table holds one
                       reference to: a borrower that may outlive the
                       table takes its own (seal_secret_ref); NULL when
                       it could not be opened */
    char *why_not;  /* why the password could not be opened, or NULL */
    char field[SCHEME_FIELD_MAX];
    char fp[33]; /* fingerprint of these credentials (user + sealed
                    password): a new one needs a first login again */
};

struct schemes;

/* Loads HERALD_SECRET_KEY_FILE when set (HERR_INVALID / HERR_IO with e
 * naming it otherwise). */
int schemes_new(const struct settings *s, struct schemes **out, struct herr *e);

/* The queue to read schemes through (borrowed); polling needs it. */
void schemes_set_queue(struct schemes *sc, struct queue *q);
void schemes_free(struct schemes *sc);

/* 1 once the table has been read (the worker takes no job before). */
int schemes_loaded(const struct schemes *sc);

/* Replaces the table by the n stored (field, value) pairs -- HGETALL's,
 * from schemes_poll, or a unit test's -- opening each password with the
 * key; an unreadable value is logged and left out. */
void schemes_load(struct schemes *sc, const char *const *fields,
                  const char *const *values, const size_t *lens, size_t n);

/* Asks Redis whether the table changed, and reloads it when it did. */
void schemes_poll(struct schemes *sc);

/* The scheme for job (org, from), or NULL. Borrowed until the next
 * reload: copy what must outlive the current loop turn (the password:
 * take a reference with seal_secret_ref, not a copy). */
const struct scheme_entry *schemes_find(const struct schemes *sc,
                                        const char *org, const char *from);

/* The server refused this scheme's credentials with `reply`. */
void schemes_mark_failed(struct schemes *sc, const char *field,
                         const char *reply);

#endif
