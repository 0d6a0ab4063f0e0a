/*
 * settings — every setting of SPEC §2 as one row of one table: name, env
 * variable, flag, default, bounds, whether it is secret.
 *
 * Loading order: embedded defaults, then the environment, then flags
 * (flags win). --print-config shows the effective values, secrets hidden.
 * Secrets (passwords) have no flag: they never appear in argv.
 */
#ifndef HERALD_SETTINGS_H
#define HERALD_SETTINGS_H

#include "err.h"

#include <stdio.h>
#include <sys/socket.h>

struct settings {
    char *redis;
    char *prefix;
    char *relay;
    char *relay_user;
    char *relay_password;
    char *default_from;
    char *sender_domain;
    char *mc;
    char *secret_key_file;
    long concurrency;
    char *ca_file;
    char *platform_name;
    char *dns;
    char *sender_ips;
    long heartbeat_s;
    long retry_base_s;
    long retry_cap_s;
    long retry_max_attempts;
    long retry_max_age_s;
    long connect_timeout_s;
    long smtp_timeout_s;
    long shutdown_grace_s;
    char *worker_id;
    char *log_level;
    long scheme_connections;
    long ledger_days;        /* delivered ids are remembered this long */
    long max_inflight_bytes; /* raw job bytes a worker holds at once */
    long fair_window;        /* jobs staged per lane by organisation */
    char *api_listen;        /* herald-api: host:port */
    long mc_retention_days;  /* 0: forever */
    long mc_body_days;       /* 0: as long as the record */
    char *helo_name;         /* EHLO name; NULL: settings_helo_name finds */
};

/* Fills every field with its embedded default (strings are owned). */
void settings_defaults(struct settings *s);
void settings_free(struct settings *s);

/*
 * Applies HERALD_* variables from the environment. Returns 0, or
 * HERR_INVALID with `e` naming the variable and the rule.
 */
int settings_load_env(struct settings *s, struct herr *e);

/*
 * Consumes setting flags ("--redis URL" or "--redis=URL") from argv,
 * compacting argv in place and updating *argc, so the program can parse
 * what remains. Returns 0, or HERR_INVALID naming the flag.
 */
int settings_load_args(struct settings *s, int *argc, char **argv,
                       struct herr *e);

/* Sets one setting by env name ("HERALD_RELAY") or flag ("--relay"). */
int settings_set(struct settings *s, const char *key, const char *value,
                 struct herr *e);

/*
 * Forgets the secrets (HERALD_RELAY_PASSWORD): their settings copy is
 * wiped and freed, and the value in the process environment is
 * overwritten in place (so neither a core dump nor /proc/PID/environ
 * shows it) and removed. For a program that has taken its own copy into
 * secret memory (seal.h) and needs the settings' copy no more.
 */
void settings_scrub_secrets(struct settings *s);

/* One "NAME=value" line per setting; secrets printed as "(hidden)"/"(unset)".
 */
void settings_print(const struct settings *s, FILE *f);

/* The "Settings:" part of --help: flag, env name, default, meaning. */
void settings_usage(FILE *f);

/*
 * A program's start: defaults, then the environment, then its flags; then
 * --help (usage(stdout)), --version ("<prog> <version>"), --print-config.
 * Returns -1 when the program is to run with *s loaded, else the exit
 * code (0 after --help/--version/--print-config; 2, with "<prog>: why"
 * on stderr, for a bad setting or an unknown argument) with *s freed.
 */
int settings_main(struct settings *s, const char *prog, int argc, char **argv,
                  void (*usage)(FILE *));

/* A host:port (IPv4, "localhost", or [IPv6]) as a socket address: 0 or
 * HERR_INVALID. */
/*
 * The name to give in EHLO (SPEC §2): HERALD_HELO_NAME when set, else the
 * host's fully qualified name (gethostname, and getaddrinfo's canonical
 * name when that has no dot; names of localhost do not count). Returns 1
 * with the name in out, or 0 with out empty when there is none: RFC 5321
 * §4.1.4 then wants the connection's address literal ("[192.0.2.1]"),
 * which only the caller knows. Blocking (a resolver look-up): call once,
 * at start.
 */
int settings_helo_name(const struct settings *s, char *out, size_t n);

/* The address literal of `sa` for EHLO: "[192.0.2.1]", "[IPv6:2001:db8::1]"
 * (an IPv4-mapped IPv6 address as IPv4). 0, or -1 for another family. */
int settings_addr_literal(const struct sockaddr *sa, char *out, size_t n);

int settings_parse_listen(const char *v, struct sockaddr_storage *ss,
                          socklen_t *len);

/* Parsed HERALD_REDIS. */
struct redis_target {
    char host[256];
    int port;
    char unix_path[256]; /* non-empty for unix:// */
    char password[256];
    int db;
};

/* Parses a Redis URL (SPEC §2 forms). 0 or HERR_INVALID with `e`. */
int settings_parse_redis(const char *url, struct redis_target *t,
                         struct herr *e);

#endif
