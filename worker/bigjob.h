/*
 * bigjob — a job over JOB_MAX_BYTES that this worker took, moved to
 * <p>:dead (reason "invalid", the raw text whole, SPEC §3) without the
 * worker ever holding it: the queue hands over only its length, and the
 * bytes move between Redis keys in pieces of BIGJOB_PIECE, so the
 * worker's memory stays about one piece whatever the job's size, and its
 * loop never stops for long.
 *
 * One job at a time, in the order added:
 *   stage   Redis copies the job aside (queue_big_stage);
 *   scan    read it piece by piece: is it text (UTF-8, no NUL)?
 *   write   read it again, write the dead entry piece by piece (the raw
 *           text JSON-escaped, or base64), common/dead.h's pieces;
 *   finish  one script: out of the processing list, the entry onto dead.
 * A stage that went away (it lives an hour; a Redis restart without it)
 * starts the job again, at most BIGJOB_RESTARTS times. Every step is safe
 * to repeat, and the job stays in the processing list until the finish:
 * a worker that dies or stops midway hands it back like any job.
 *
 * Outcomes are logged (the job's id when it begins with one). An error
 * reply Redis would give again (queue.h) leaves the job in the processing
 * list, logged; the next worker to start under this id takes it again.
 */
#ifndef HERALD_BIGJOB_H
#define HERALD_BIGJOB_H

#include "queue.h"

#include <stddef.h>

#define BIGJOB_PIECE (256u * 1024)
#define BIGJOB_RESTARTS 3

struct bigjob;

struct bigjob *bigjob_new(struct queue *q);

/* Queues the job of `len` bytes found in the processing list. */
void bigjob_add(struct bigjob *b, size_t len);

/* How many jobs of `len` bytes are queued or being moved. */
size_t bigjob_count(const struct bigjob *b, size_t len);

/* Nothing more is started; replies that still come are ignored. */
void bigjob_stop(struct bigjob *b);

/* Frees it: only once the queue is closed (no reply can come). */
void bigjob_free(struct bigjob *b);

#endif
