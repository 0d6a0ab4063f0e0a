/*
 * heraldctl — the operator and support tool (SPEC §7): Message Center
 * queries, queue stats, dead-letter listing and replay, message
 * templates, Email Sending Schemes (add, update, list, test, remove) and
 * key rotation, organisations' settings (org set, show, list), SPF
 * checks.
 */
#include "ctl.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#ifndef HERALD_VERSION
#define HERALD_VERSION "0.0.0"
#endif

struct command {
    const char *group, *name;
    int (*run)(struct ctl *c, int argc, char **argv);
    const char *usage; /* the synopsis line(s) */
    const char *help;  /* what it does, its options and exit codes */
};

static const struct command commands[] = {
    {"mc", "show", ctl_mc_show, "heraldctl mc show ID [--json]",
     "Prints the Message Center record of job ID: a readable view, or with\n"
     "--json the record as one JSON object.\n"
     "Exit: 0 shown, 1 no such message or store failure, 2 bad usage.\n"},
    {"mc", "list", ctl_mc_list,
     "heraldctl mc list [--org ORG] [--account A] [--status S] [--to ADDR]\n"
     "                  [--type T] [--path P] [--from ADDR] [--q WORDS]\n"
     "                  [--since T] [--until T] [--limit N] [--cursor C]\n"
     "                  [--json|--csv]",
     "Lists Message Center records, newest first: a table (created, id,\n"
     "status, org, account, path, first recipient + count, subject), with\n"
     "--json an array of records, with --csv the rows as CSV.\n"
     "  --org ORG       only this organisation\n"
     "  --account A     only this client account\n"
     "  --status S      queued, sending, sent, deferred or failed\n"
     "  --to ADDR       only messages with this recipient (to, cc or bcc)\n"
     "  --type T        only this type (receipt, reminder, ...)\n"
     "  --path P        scheme, spf or relay\n"
     "  --from ADDR     only messages from this address\n"
     "  --q WORDS       words of the subject (each starts a word of it)\n"
     "  --since T       created at or after T (RFC 3339)\n"
     "  --until T       created at or before T (RFC 3339)\n"
     "  --limit N       at most N records (default 50, at most 500)\n"
     "  --cursor C      the next page (its cursor is printed with a page)\n"
     "Exit: 0 listed (also when nothing matched), 1 store failure, 2 bad "
     "usage.\n"},
    {"mc", "resend", ctl_mc_resend, "heraldctl mc resend ID [--to ADDR]...",
     "Enqueues message ID again as a new job (a new id, printed) with the\n"
     "stored content and resend_of = ID: to its recipients (to, cc, bcc),\n"
     "or to the --to addresses instead. It passes through quotas like any\n"
     "job. A message with attachments cannot be resent (their content is\n"
     "not kept).\n"
     "Exit: 0 enqueued, 1 no such message, not resendable, or a store or\n"
     "Redis failure, 2 bad usage.\n"},
    {"mc", "purge", ctl_mc_purge, "heraldctl mc purge [--dry-run]",
     "Applies the Message Center's retention now: removes the records older\n"
     "than HERALD_MC_RETENTION_DAYS and clears the text and html of those\n"
     "older than HERALD_MC_BODY_DAYS (body_expired), and says how many.\n"
     "Workers do the same on their own, once an hour. With --dry-run,\n"
     "only counts.\n"
     "Exit: 0 done (also with nothing to do), 1 store failure, 2 bad "
     "usage.\n"},
    {"mc", "migrate", ctl_mc_migrate, "heraldctl mc migrate",
     "Creates or upgrades the schema of the Message Center store\n"
     "(HERALD_MC) and prints its version. Workers and herald-api do the same\n"
     "when they start (concurrent starts are safe); this does it ahead of\n"
     "them. Running it again changes nothing.\n"
     "Exit: 0 done, 1 the store cannot be opened or is newer than this\n"
     "program, 2 bad usage.\n"},
    {"mc", "import", ctl_mc_import, "heraldctl mc import --from STORE-URL",
     "Copies every record of the store at STORE-URL (e.g.\n"
     "sqlite:///var/lib/herald/mc.db) into the configured one (HERALD_MC),\n"
     "as stored: status, times, outcome and all. A record whose id the\n"
     "configured store already holds is skipped, so running it twice copies\n"
     "nothing twice. Prints how many records were copied and skipped. Run\n"
     "it with the workers stopped or already on the new store: records\n"
     "written to STORE-URL meanwhile may be missed (a second run copies\n"
     "them).\n"
     "Exit: 0 done, 1 either store failed (what was copied stays), 2 bad\n"
     "usage or a bad STORE-URL.\n"},
    {"token", "create", ctl_token_create,
     "heraldctl token create --name N --role support|app [--org ORG]...\n"
     "                       [--resend]",
     "Creates a bearer token for herald-api and prints it, once: Redis\n"
     "keeps only its SHA-256. Role support reads every organisation, or\n"
     "only the --org ones; role app reads its --org ones (at least one).\n"
     "--resend (support only) allows resending messages.\n"
     "Exit: 0 created, 1 Redis failure, 2 bad usage or a name in use.\n"},
    {"token", "list", ctl_token_list, "heraldctl token list [--json]",
     "Lists the tokens: name, role, organisations, resend, created (never\n"
     "the token itself, which is not kept).\n"
     "Exit: 0 listed, 1 Redis failure, 2 bad usage.\n"},
    {"token", "revoke", ctl_token_revoke, "heraldctl token revoke NAME",
     "Revokes the token named NAME; herald-api refuses it within a second.\n"
     "Exit: 0 revoked, 1 no such token or Redis failure, 2 bad usage.\n"},
    {"queue", "stats", ctl_queue_stats, "heraldctl queue stats [--json]",
     "Prints the length of each lane (high, normal, low), of the scheduled\n"
     "set and the dead list, and each worker: last heartbeat, its age,\n"
     "whether it is alive (heartbeat younger than HERALD_HEARTBEAT_S) and\n"
     "how many jobs its processing list holds. Processing lists of workers\n"
     "without a heartbeat entry are shown as \"(not registered)\".\n"
     "Exit: 0 printed, 1 Redis failure, 2 bad usage.\n"},
    {"queue", "resume", ctl_queue_resume, "heraldctl queue resume SENDER",
     "Lifts the pause of SENDER (relay, org:ORG or scheme:ORG/EMAIL; see\n"
     "queue stats) and makes the jobs waiting for it due in two seconds\n"
     "(by then every worker has dropped the pause). Jobs still over a\n"
     "quota go back to waiting for its next window.\n"
     "Exit: 0 done (also when it was not paused), 1 Redis failure, 2 bad\n"
     "usage.\n"},
    {"dead", "list", ctl_dead_list, "heraldctl dead list [--limit N] [--json]",
     "Lists the dead letters, newest first: a table (at, id, reason, field,\n"
     "error), or with --json an array of the entries as stored.\n"
     "Exit: 0 listed, 1 Redis failure, 2 bad usage.\n"},
    {"dead", "replay", ctl_dead_replay, "heraldctl dead replay ID...|--all",
     "Puts dead jobs back on their priority lane: the entries whose job id\n"
     "is one of the IDs, or every entry with --all. Each job is validated\n"
     "first; an invalid one is not replayed and stays in the dead list (a\n"
     "warning says which and why). A replayed entry is removed from the\n"
     "dead list and pushed to its lane in one atomic step.\n"
     "Exit: 0 all replayed, 1 an ID matched no entry or Redis failed,\n"
     "2 bad usage or an entry held an invalid job.\n"},
    {"template", "set", ctl_template_set,
     "heraldctl template set NAME --subject S [--text-file F] [--html-file F]\n"
     "  heraldctl template set NAME --file TEMPLATE.json",
     "Stores message template NAME (a job names it in \"template\" and gives\n"
     "its values in \"data\"), replacing one of that name. The template is\n"
     "checked first: {{name}} or {{ a.b }} inserts a data value (HTML-escaped\n"
     "in html), {{{name}}} inserts it unescaped (html only).\n"
     "  --subject S       the subject (at most 998 bytes, one line)\n"
     "  --text-file F     the plain-text body, read from F ('-': stdin)\n"
     "  --html-file F     the HTML body, read from F\n"
     "  --file F          the whole template as JSON: {\"subject\": \"...\",\n"
     "                    \"text\": \"...\", \"html\": \"...\"} ('-': stdin)\n"
     "The subject and at least one body are required; each part at most "
     "1 MiB.\n"
     "Exit: 0 stored, 1 Redis failure or unreadable file, 2 bad usage or an\n"
     "invalid template (the part and byte are named: \"html: unclosed {{ at\n"
     "byte 120\").\n"},
    {"template", "show", ctl_template_show,
     "heraldctl template show NAME [--json]",
     "Prints template NAME: its subject, text and html. With --json, the\n"
     "template exactly as stored (fit for \"template set NAME --file\").\n"
     "Exit: 0 shown, 1 no such template or Redis failure, 2 bad usage.\n"},
    {"template", "list", ctl_template_list, "heraldctl template list [--json]",
     "Lists the names of the stored templates, sorted; with --json an array\n"
     "of names.\n"
     "Exit: 0 listed (also when there are none), 1 Redis failure, 2 bad "
     "usage.\n"},
    {"template", "remove", ctl_template_remove,
     "heraldctl template remove NAME",
     "Removes template NAME. Jobs that still name it are rejected by the\n"
     "worker.\n"
     "Exit: 0 removed, 1 no such template or Redis failure, 2 bad usage.\n"},
    {"template", "render", ctl_template_render,
     "heraldctl template render NAME [--data JSON] [--json]",
     "Renders template NAME with the data object JSON (default {}) exactly\n"
     "as the worker would, and prints the subject, text and html: a preview.\n"
     "With --json, {\"subject\", \"text\", \"html\"} (absent parts left "
     "out).\n"
     "Exit: 0 rendered, 1 no such template or Redis failure, 2 bad usage or\n"
     "data that does not fit (the data field is named: \"data.amount:\n"
     "missing\").\n"},
    {"scheme", "add", ctl_scheme_add,
     "heraldctl scheme add    --org ORG --email ADDR --smtp-host H "
     "--smtp-port P\n"
     "                        [--imap-host H --imap-port P] --username U "
     "--password-stdin\n"
     "                        [--tls ssl|starttls|none] [--daily-limit N] "
     "[--minute-limit N]\n"
     "                        [--on-auth-failure fallback|hold] "
     "[--sent-folder F]\n"
     "                        [--time-zone TZ]",
     "Registers the Email Sending Scheme of ORG for the sending address ADDR:\n"
     "jobs from ADDR are then delivered through that SMTP server with these\n"
     "credentials. Nothing is contacted now.\n"
     "  --smtp-host H, --smtp-port P   the SMTP server (port 1-65535)\n"
     "  --imap-host H, --imap-port P   optional IMAP server (both or neither)\n"
     "  --username U                   the login\n"
     "  --password-stdin               read the password from stdin, one line\n"
     "                                 (the newline is not part of it); it is\n"
     "                                 sealed with HERALD_SECRET_KEY_FILE\n"
     "  --tls MODE     ssl (implicit TLS), starttls (required), none (only "
     "for\n"
     "                 a loopback host); default ssl on port 465, else "
     "starttls\n"
     "  --daily-limit N, --minute-limit N   recipients per day / minute\n"
     "  --time-zone TZ   the zone whose calendar days are the daily-limit\n"
     "                 windows (e.g. Europe/Paris; it must exist in\n"
     "                 /usr/share/zoneinfo); default UTC\n"
     "  --on-auth-failure fallback|hold    when the server rejects the login:\n"
     "                 send through the platform relay (default) or hold jobs\n"
     "  --sent-folder F  IMAP folder for a copy of each message (needs IMAP)\n"
     "A password on the command line (--password X) is refused.\n"
     "Exit: 0 added, 1 Redis failure, 2 bad usage or input (the flag is\n"
     "named), the scheme exists already, or a missing or bad key file.\n"},
    {"scheme", "update", ctl_scheme_update,
     "heraldctl scheme update --org ORG --email ADDR [same options as add]\n"
     "                        [--no-imap] [--no-daily-limit] "
     "[--no-minute-limit] [--no-sent-folder]\n"
     "                        [--no-time-zone]",
     "Changes only the settings given; --no-* remove an optional one. A new\n"
     "--username or --password-stdin clears an auth_failed mark. Atomic: a\n"
     "concurrent change is re-read and the update applied on top of it.\n"
     "Exit: 0 updated, 1 Redis failure, 2 bad usage or input, no such "
     "scheme.\n"},
    {"scheme", "list", ctl_scheme_list,
     "heraldctl scheme list [--org ORG] "
     "[--json]",
     "Lists the schemes (of ORG): a table, or with --json an array of objects\n"
     "with every setting except the password, plus state (ok or "
     "auth_failed),\n"
     "state_reason and state_at. A password is never printed.\n"
     "Exit: 0 listed, 1 Redis failure, 2 bad usage.\n"},
    {"scheme", "test", ctl_scheme_test,
     "heraldctl scheme test   --org ORG --email ADDR [--send-to ADDR]",
     "Tests the scheme of ORG for ADDR against its own servers, as the help\n"
     "page's \"Send Test Message\" does, printing each step with the "
     "server's\nreply: connect, EHLO, TLS (as the scheme's --tls says; "
     "certificates are\nverified, HERALD_CA_FILE adds a CA bundle), AUTH, "
     "then, when the scheme\nhas an IMAP server, connect, TLS and LOGIN there "
     "with the same\ncredentials. With --send-to, a short real test message "
     "is sent to ADDR\n(From the scheme's address). Stops at the first step "
     "that fails. The\npassword is opened with HERALD_SECRET_KEY_FILE and "
     "never printed.\nA passing test clears an auth_failed mark.\n"
     "Exit: 0 every step passed, 1 a step failed (named, with the server's\n"
     "reply) or Redis failed, 2 bad usage, no such scheme, a bad --send-to\n"
     "address, or a missing, bad or wrong key file.\n"},
    {"scheme", "remove", ctl_scheme_remove,
     "heraldctl scheme remove --org ORG --email ADDR",
     "Removes a scheme; jobs from ADDR then take the SPF or relay path.\n"
     "Exit: 0 removed, 1 Redis failure, 2 bad usage or no such scheme.\n"},
    {"key", "rotate", ctl_key_rotate, "heraldctl key rotate --new-key-file F",
     "Re-seals every stored scheme password under the key in F: each is\n"
     "opened with HERALD_SECRET_KEY_FILE (or with F, when an earlier run was\n"
     "interrupted) and written back atomically. Then point\n"
     "HERALD_SECRET_KEY_FILE at F everywhere. Prints how many were re-sealed.\n"
     "Exit: 0 all done, 1 a password could not be opened (the scheme is\n"
     "named) or Redis failed, 2 bad usage or a missing or bad key file.\n"},
    {"org", "set", ctl_org_set,
     "heraldctl org set ORG [--name NAME] [--relay-daily-limit N]\n"
     "                      [--no-relay-daily-limit]",
     "Sets the settings of organisation ORG, keeping those not given (an org\n"
     "without a record gets one):\n"
     "  --name NAME              its display name (1-200 bytes, no\n"
     "                           control characters)\n"
     "  --relay-daily-limit N    recipients per UTC day sent for ORG\n"
     "                           through the platform relay (paths spf\n"
     "                           and relay), 1-1000000000; jobs over it\n"
     "                           wait for the next day\n"
     "  --no-relay-daily-limit   removes that limit\n"
     "Workers pick the change up within one poll. Atomic: a concurrent change\n"
     "is re-read and this one applied on top of it.\n"
     "Exit: 0 set, 1 Redis failure or a stored value that does not parse,\n"
     "2 bad usage or input (the flag and value are named), or nothing to\n"
     "change.\n"},
    {"org", "show", ctl_org_show, "heraldctl org show ORG [--json]",
     "Prints the settings of organisation ORG: name, relay daily limit and\n"
     "when they were last changed; with --json the record as stored.\n"
     "Exit: 0 shown, 1 no such org or Redis failure, 2 bad usage.\n"},
    {"org", "list", ctl_org_list, "heraldctl org list [--json]",
     "Lists the organisations with settings, sorted: a table, or with --json\n"
     "an array of the records.\n"
     "Exit: 0 listed (also when there are none), 1 Redis failure, 2 bad "
     "usage.\n"},
    {"spf", "check", ctl_spf_check,
     "heraldctl spf check DOMAIN [--json] [--ip ADDR]...",
     "Does the SPF policy of DOMAIN authorise the platform to send as it?\n"
     "With sender addresses (--ip, repeatable or comma separated; else\n"
     "HERALD_SENDER_IPS) RFC 7208 check_host() runs for each, and the\n"
     "platform is authorised only when every one gets \"pass\". Without\n"
     "any, the policy must reach include:HERALD_SENDER_DOMAIN through its\n"
     "include: and redirect= chain. DNS: HERALD_DNS (host[:port]) or the\n"
     "system's resolvers.\n"
     "Prints the record, the chain of records followed, the verdict and\n"
     "why, and when not authorised what to change in the record. With\n"
     "--json: {\"domain\", \"record\", \"result\", \"authorised\", "
     "\"chain\",\n"
     "\"advice\", ...} where result is the RFC 7208 result.\n"
     "Exit: 0 the check completed (whatever the verdict), 1 temperror (a DNS\n"
     "look-up failed; never authorised), 2 bad usage (DOMAIN not a domain\n"
     "name, a bad address, HERALD_DNS not host[:port]).\n"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void
usage(FILE *f)
{
    fputs("Usage: heraldctl [SETTINGS] COMMAND [OPTIONS]\n"
          "       heraldctl --help | --version | --print-config\n\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fputs("\n\"heraldctl COMMAND --help\" describes one command.\n"
          "Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad "
          "input.\n\n",
          f);
    settings_usage(f);
}

static void
command_usage(const struct command *cmd, FILE *f)
{
    fprintf(f,
            "Usage: %s\n\n%s\nSettings flags (see heraldctl --help) may "
            "be given anywhere.\n",
            cmd->usage, cmd->help);
}

static void
group_usage(const char *group, FILE *f)
{
    fprintf(f, "Usage:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].group, group) == 0)
            fprintf(f, "  %s\n", commands[i].usage);
}

static int
has_group(const char *group)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].group, group) == 0)
            return 1;
    return 0;
}

static int
dispatch(struct ctl *c, int argc, char **argv, int settings_bad,
         const struct herr *se)
{
    if (argc < 2) {
        usage(stderr);
        return CTL_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0 ||
        strcmp(first, "help") == 0) {
        usage(stdout);
        return CTL_OK;
    }
    if (strcmp(first, "--version") == 0) {
        printf("heraldctl %s\n", HERALD_VERSION);
        return CTL_OK;
    }
    if (strcmp(first, "--print-config") == 0) {
        if (settings_bad)
            return ctl_fail("settings", HERR_INVALID, se);
        if (argc > 2)
            return ctl_usage_error("--print-config: unexpected argument '%s'",
                                   argv[2]);
        settings_print(&c->s, stdout);
        return CTL_OK;
    }
    if (first[0] == '-')
        return ctl_usage_error("unknown flag '%s' (see heraldctl --help)",
                               first);
    if (!has_group(first))
        return ctl_usage_error("unknown command '%s' (see heraldctl --help)",
                               first);
    if (argc < 3 || argv[2][0] == '-') {
        if (argc >= 3 && ctl_wants_help(argc - 2, argv + 2)) {
            group_usage(first, stdout);
            return CTL_OK;
        }
        group_usage(first, stderr);
        return ctl_usage_error("%s: missing subcommand", first);
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *cmd = &commands[i];
        if (strcmp(cmd->group, first) || strcmp(cmd->name, argv[2]))
            continue;
        if (ctl_wants_help(argc - 3, argv + 3)) {
            command_usage(cmd, stdout);
            return CTL_OK;
        }
        if (settings_bad)
            return ctl_fail("settings", HERR_INVALID, se);
        return cmd->run(c, argc - 3, argv + 3);
    }
    group_usage(first, stderr);
    return ctl_usage_error("%s: unknown subcommand '%s'", first, argv[2]);
}

int
main(int argc, char **argv)
{
    struct ctl c;
    struct herr e = {{0}, {0}};
    memset(&c, 0, sizeof c);
    log_init("heraldctl", "info");
    settings_defaults(&c.s);
    /* A bad setting is reported only when a command needs settings, so
     * --help and --version still work with a broken environment. */
    int bad = settings_load_env(&c.s, &e) != 0;
    struct settings tmp;
    struct herr ae = {{0}, {0}};
    settings_defaults(&tmp);
    /* With a bad environment the flags are still stripped (into a
     * scratch copy) so the command line parses. */
    int args_bad = settings_load_args(bad ? &tmp : &c.s, &argc, argv, &ae);
    settings_free(&tmp);
    if (args_bad) {
        /* argv is not reliable now: only --help/--version still work. */
        int code = CTL_USAGE;
        if (ctl_wants_help(argc, argv)) {
            usage(stdout);
            code = CTL_OK;
        } else {
            ctl_fail("settings", HERR_INVALID, &ae);
        }
        settings_free(&c.s);
        return code;
    }
    if (!bad)
        log_init("heraldctl", c.s.log_level);
    int code = dispatch(&c, argc, argv, bad, &e);
    herald_close(c.h);
    settings_free(&c.s);
    if (fflush(stdout) != 0 && code == CTL_OK)
        code = CTL_FAIL;
    return code;
}
