#include "console.h"
#include "err.h"

#include <stdint.h>
#include <string.h>

/*
 * The three files, each between two symbols, put in .rodata by the
 * assembler. The paths are relative to the directory the compiler runs in:
 * the repository's root, as the Makefile runs it (which also makes
 * console.o depend on the files, as the compiler's -MMD cannot see an
 * .incbin). Each file is followed by a NUL byte that is not counted.
 */
#define API_CONSOLE_INCBIN(sym, file)                                          \
    __asm__(".pushsection .rodata\n"                                           \
            ".balign 16\n"                                                     \
            ".globl " #sym "_start\n"                                          \
            ".hidden " #sym "_start\n" #sym "_start:\n"                        \
            ".incbin \"" file "\"\n"                                           \
            ".globl " #sym "_end\n"                                            \
            ".hidden " #sym "_end\n" #sym "_end:\n"                            \
            ".byte 0\n"                                                        \
            ".popsection\n");                                                  \
    extern const char sym##_start[], sym##_end[]

API_CONSOLE_INCBIN(api_console_html, "api/console/index.html");
API_CONSOLE_INCBIN(api_console_css, "api/console/console.css");
API_CONSOLE_INCBIN(api_console_js, "api/console/console.js");

int
api_console_asset(const char *path, const char **body, size_t *len,
                  const char **content_type)
{
    static const struct {
        const char *path, *type;
        const char *start, *end;
    } assets[] = {
        {"/", "text/html; charset=utf-8", api_console_html_start,
         api_console_html_end},
        {"/console.css", "text/css; charset=utf-8", api_console_css_start,
         api_console_css_end},
        {"/console.js", "text/javascript; charset=utf-8", api_console_js_start,
         api_console_js_end},
    };
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        if (strcmp(path, assets[i].path) == 0) {
            *body = assets[i].start;
            /* two symbols, not one C object: subtract addresses */
            *len =
                (size_t)((uintptr_t)assets[i].end - (uintptr_t)assets[i].start);
            *content_type = assets[i].type;
            return 0;
        }
    }
    return HERR_NOTFOUND;
}
