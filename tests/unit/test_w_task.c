/* worker/task.c's state machine, through libworker.a: the table of moves
 * (every state reachable, every task able to end), and task_enter's
 * bookkeeping (slots held exactly in FENCING and SENDING, the gated count,
 * a move the table does not list counted and made). */
#include "../../worker/task.h"
#include "t.h"

#include <string.h>

static void
test_names(void)
{
    for (int a = 0; a < TASK_NSTATES; a++) {
        CHECK_MSG(strcmp(task_state_name((enum task_state)a), "?") != 0,
                  "state %d has no name", a);
        for (int b = 0; b < a; b++)
            CHECK(strcmp(task_state_name((enum task_state)a),
                         task_state_name((enum task_state)b)) != 0);
    }
    CHECK_STR(task_state_name((enum task_state)TASK_NSTATES), "?");
}

/* The states reachable from `from` through the table (bit set). */
static unsigned
reachable(enum task_state from)
{
    unsigned seen = 1u << from, frontier = seen;
    while (frontier) {
        unsigned next = 0;
        for (int s = 0; s < TASK_NSTATES; s++) {
            if (!(frontier & (1u << s)))
                continue;
            for (int to = 0; to < TASK_NSTATES; to++)
                if (task_transition_ok((enum task_state)s,
                                       (enum task_state)to) &&
                    !(seen & (1u << to)))
                    next |= 1u << to;
        }
        seen |= next;
        frontier = next;
    }
    return seen;
}

static void
test_table(void)
{
    unsigned all = (1u << TASK_NSTATES) - 1;
    CHECK_MSG(reachable(TASK_NEW) == all, "from new: %x of %x",
              reachable(TASK_NEW), all);
    for (int s = 0; s < TASK_DONE; s++) {
        /* anything may be freed (a shutdown, a close); and short of that
         * every task can reach its last Redis step */
        CHECK(task_transition_ok((enum task_state)s, TASK_DONE));
        if (s != TASK_FINISHING)
            CHECK_MSG(reachable((enum task_state)s) & (1u << TASK_FINISHING),
                      "%s cannot finish", task_state_name((enum task_state)s));
    }
    for (int to = 0; to < TASK_NSTATES; to++) {
        CHECK(!task_transition_ok(TASK_DONE, (enum task_state)to));
        if (to != TASK_DONE)
            CHECK(!task_transition_ok(TASK_FINISHING, (enum task_state)to));
    }
    /* a few that must not happen */
    CHECK(!task_transition_ok(TASK_READY, TASK_QUOTA));      /* quota first */
    CHECK(!task_transition_ok(TASK_CLAIMING, TASK_SENDING)); /* record first */
    CHECK(!task_transition_ok(TASK_RECORDING, TASK_SENDING));
    CHECK(!task_transition_ok(TASK_NEW, TASK_READY));
    CHECK(!task_transition_ok(TASK_PROBING, TASK_SENDING));
    CHECK(!task_transition_ok(TASK_NEW, TASK_NSTATES));
}

static void
walk(struct task *t, const enum task_state *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        task_enter(t, v[i]);
}

static void
test_enter(void)
{
    struct worker w;
    memset(&w, 0, sizeof w);
    struct task t;
    memset(&t, 0, sizeof t);
    t.w = &w;
    CHECK(t.state == TASK_NEW); /* a zeroed task */

    /* delivered: one slot while sending, none after */
    const enum task_state sent[] = {TASK_CLAIMING, TASK_RECORDING, TASK_READY,
                                    TASK_SENDING};
    walk(&t, sent, 4);
    CHECK(w.slots == 1 && t.has_slot_ever);
    task_enter(&t, TASK_RECORDING);
    CHECK(w.slots == 0 && t.state == TASK_RECORDING);
    task_enter(&t, TASK_FINISHING);
    task_enter(&t, TASK_DONE);
    CHECK(w.slots == 0 && w.task_illegal == 0);

    /* withdrawn while waiting for a connection: the claim checked again,
     * the slot kept through it */
    memset(&t, 0, sizeof t);
    t.w = &w;
    const enum task_state fence[] = {TASK_CLAIMING, TASK_RECORDING, TASK_READY,
                                     TASK_SENDING, TASK_FENCING};
    walk(&t, fence, 5);
    CHECK(w.slots == 1);
    task_enter(&t, TASK_SENDING);
    CHECK(w.slots == 1);
    task_enter(&t, TASK_SENDING); /* no move: nothing counted twice */
    CHECK(w.slots == 1);
    /* the scheme's login refused: routed again, gated behind another
     * transaction's login: no slot, one gated */
    task_enter(&t, TASK_GATED);
    CHECK(w.slots == 0 && w.ngated == 1);
    task_enter(&t, TASK_GATED);
    CHECK(w.ngated == 1);
    task_enter(&t, TASK_QUOTA);
    CHECK(w.ngated == 0 && w.task_illegal == 0);

    /* freed while sending (a close): the slot comes back */
    const enum task_state back[] = {TASK_RECORDING, TASK_READY, TASK_SENDING};
    walk(&t, back, 3);
    CHECK(w.slots == 1);
    task_enter(&t, TASK_DONE);
    CHECK(w.slots == 0 && w.task_illegal == 0);

    /* a move the table does not list: counted (and logged), and made */
    memset(&t, 0, sizeof t);
    t.w = &w;
    const enum task_state bad[] = {TASK_CLAIMING, TASK_RECORDING, TASK_READY};
    walk(&t, bad, 3);
    CHECK(w.task_illegal == 0);
    task_enter(&t, TASK_QUOTA);
    CHECK(w.task_illegal == 1 && t.state == TASK_QUOTA);
    task_enter(&t, TASK_FINISHING);
    task_enter(&t, TASK_RECORDING);
    CHECK(w.task_illegal == 2);
}

int
main(void)
{
    test_names();
    test_table();
    test_enter();
    return T_DONE("test_w_task");
}
