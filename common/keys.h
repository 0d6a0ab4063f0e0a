/*
 * keys — the Redis key layout, shared by the worker and the producers.
 * Every key starts with the configured prefix (HERALD_PREFIX, "herald").
 *
 *   <p>:queue:high|normal|low   list   producers LPUSH raw job JSON; workers
 *                                      take from the right (FIFO) into the
 *                                      lane's staging below
 *   <p>:queue:<lane>:org:<org>  list   a lane's staged jobs of one
 *                                      organisation (raw, as pushed; take
 *                                      end on the right): at most
 *                                      HERALD_FAIR_WINDOW per lane, taken
 *                                      round-robin over the organisations
 *                                      (worker/queue.h, "Fairness")
 *   <p>:fair:<lane>             list   the lane's ring: the organisations
 *                                      with staged jobs, next at the left
 *   <p>:fair:<lane>:staged      string how many jobs the lane has staged
 *                                      (absent: none); a lane's length is
 *                                      LLEN <p>:queue:<lane> plus this
 *   <p>:fair:tick               string the takes' slots so far (integer):
 *                                      of every eight, 4 go to high, 3 to
 *                                      normal, 1 to low first
 *   <p>:processing:<worker>     list   jobs a worker has taken and not yet
 *                                      finished (crash-safe take)
 *   <p>:workers                 hash   worker id -> last heartbeat (ms); a
 *                                      worker silent for HERALD_HEARTBEAT_S
 *                                      has its processing list returned to
 *                                      the lanes by another worker
 *   <p>:dead                    list   dead letters, newest at the left:
 *                                      {"error","field","reason","at",
 *                                       "id"?, "job"|"job_base64"}
 *   <p>:scheduled               zset   jobs (canonical JSON, with id) due
 *                                      later (send_at, retries); score = due
 *                                      time in ms; workers move due ones to
 *                                      their lane
 *   <p>:job:<job id>            hash   delivery ledger: state ("inflight",
 *                                      "deferred", "sent", "failed"), owner
 *                                      (worker id while inflight; released
 *                                      when the job is handed back),
 *                                      attempts, first_at (ms), fence (the
 *                                      current claim's token), accepted
 *                                      (recipients that took it in an
 *                                      earlier attempt, "\n"-separated).
 *                                      A "sent" id is never sent again.
 *   <p>:stats                   hash   stale_accepts: "sent" recorded under
 *                                      a claim that had been superseded
 *                                      (possible duplicates)
 *   <p>:orgs, <p>:orgs:version  hash / organisations' settings (common/org.h)
 *                               string
 *   <p>:quota:<sender>:min|day:<window start ms>
 *                               string a sender's quota counter
 *                                      (common/quota.h); with
 *   <p>:quota:…:<ms>:jobs       hash   attempt ("<id>:<fence>") -> how many
 *                                      recipients it holds in the counter
 *   <p>:quota:wait:<sender>     zset   job ids waiting for the sender
 *   <p>:pauses                  hash   sender -> "<until ms> <reason>"
 *   <p>:pause_probes            hash   sender -> "<step ms> <set at ms>"
 *   <p>:templates               hash   template name -> compact JSON
 *                                      {"subject","text","html"} (layout
 *                                      and syntax: tmpl.h); written by
 *                                      heraldctl / libherald, read by
 *                                      workers for jobs with "template"
 *   <p>:schemes                 hash   Email Sending Schemes: field
 *                                      "<org>/<email lowercased>" ->
 *                                      compact JSON of the scheme (layout,
 *                                      rules and the sealed "password":
 *                                      common/scheme.h); written by
 *                                      heraldctl / libherald with the
 *                                      compare-and-set redis/scheme_cas.lua
 *                                      only (workers too, to mark
 *                                      auth_failed)
 *   <p>:big:<worker>:job,       string a job over JOB_MAX_BYTES being
 *   <p>:big:<worker>:entry             moved to dead in pieces (its copy,
 *                                      and the dead entry being built), an
 *                                      hour at most (worker/bigjob.h)
 *   <p>:spf:<domain>            string the fleet's SPF verdict for a domain
 *                                      ("1|reason" authorised, "0|reason"
 *                                      not), expiring with the records'
 *                                      TTL (worker/spfcache.h)
 *   <p>:scheme_login:<field>    string the fleet-wide login lease of one
 *                                      scheme's credentials: one worker
 *                                      tries them while the others wait
 *                                      (worker/logingate.h)
 *   <p>:schemes:version         string integer INCR'd by the same script as
 *                                      every change of <p>:schemes; workers
 *                                      poll it and reload the hash when it
 *                                      moves (missing = 0)
 *
 * Helpers build key names into a caller buffer and return its length, or
 * -1 when it does not fit. Nothing else makes key names: the Redis
 * scripts (common/rscript.h) are given theirs, or a stem built here for
 * keys named after data the script reads (keys_*_stem: the key is the
 * stem followed by a job id, an organisation or a worker id).
 */
#ifndef HERALD_KEYS_H
#define HERALD_KEYS_H

#include "job.h"

#include <stdio.h>

/* Room for the longest key Herald builds: a quota counter's
 * "<prefix>:quota:scheme:<org>/<email>:day:<ms>:jobs" (quota.h checks it
 * at compile time). */
#define KEYS_MAX 512

static inline int
keys_queue(char *out, size_t n, const char *prefix, enum job_priority p)
{
    int r = snprintf(out, n, "%s:queue:%s", prefix, job_priority_name(p));
    return r < 0 || (size_t)r >= n ? -1 : r;
}

/* The lane's ring (`part` NULL) or its "staged" count. */
static inline int
keys_fair(char *out, size_t n, const char *prefix, enum job_priority p,
          const char *part)
{
    int r = snprintf(out, n, "%s:fair:%s%s%s", prefix, job_priority_name(p),
                     part ? ":" : "", part ? part : "");
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_processing(char *out, size_t n, const char *prefix, const char *worker)
{
    int r = snprintf(out, n, "%s:processing:%s", prefix, worker);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_simple(char *out, size_t n, const char *prefix, const char *name)
{
    int r = snprintf(out, n, "%s:%s", prefix, name);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_ledger(char *out, size_t n, const char *prefix, const char *id)
{
    int r = snprintf(out, n, "%s:job:%s", prefix, id);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

/* Stems: the key of a ledger entry, of a lane's staged jobs of one
 * organisation, of a worker's processing list, but for the id, the
 * organisation or the worker at the end. */
static inline int
keys_ledger_stem(char *out, size_t n, const char *prefix)
{
    return keys_ledger(out, n, prefix, "");
}

static inline int
keys_staged_stem(char *out, size_t n, const char *prefix, enum job_priority p)
{
    int r = snprintf(out, n, "%s:queue:%s:org:", prefix, job_priority_name(p));
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_processing_stem(char *out, size_t n, const char *prefix)
{
    return keys_processing(out, n, prefix, "");
}

/* Quotas (common/quota.h): a sender's counter of the window starting at
 * start_ms (per_minute: a minute window, else a day), the hash of what
 * each attempt holds in a counter, the sender's waiting set, the pauses
 * and the pause probes. */
static inline int
keys_quota_counter(char *out, size_t n, const char *prefix, const char *sender,
                   int per_minute, long long start_ms)
{
    int r = snprintf(out, n, "%s:quota:%s:%s:%lld", prefix, sender,
                     per_minute ? "min" : "day", start_ms);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_quota_jobs(char *out, size_t n, const char *counter)
{
    int r = snprintf(out, n, "%s:jobs", counter);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_quota_wait(char *out, size_t n, const char *prefix, const char *sender)
{
    int r = snprintf(out, n, "%s:quota:wait:%s", prefix, sender);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_pauses(char *out, size_t n, const char *prefix)
{
    return keys_simple(out, n, prefix, "pauses");
}

static inline int
keys_pause_probes(char *out, size_t n, const char *prefix)
{
    return keys_simple(out, n, prefix, "pause_probes");
}

static inline int
keys_big(char *out, size_t n, const char *prefix, const char *worker,
         const char *part)
{
    int r = snprintf(out, n, "%s:big:%s:%s", prefix, worker, part);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_spf(char *out, size_t n, const char *prefix, const char *domain)
{
    int r = snprintf(out, n, "%s:spf:%s", prefix, domain);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

static inline int
keys_scheme_login(char *out, size_t n, const char *prefix, const char *field)
{
    int r = snprintf(out, n, "%s:scheme_login:%s", prefix, field);
    return r < 0 || (size_t)r >= n ? -1 : r;
}

#endif
