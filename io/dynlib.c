/* dynlib — a shared library's functions, loaded on first use (dynlib.h). */
#include "dynlib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int
load(struct dynlib *d)
{
    void *h = dlopen(d->soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(d->why, sizeof d->why, "%s", dlerror());
        return -1;
    }
    for (size_t i = 0; i < d->n; i++) {
        void *f = dlsym(h, d->names[i]);
        if (f == NULL) {
            snprintf(d->why, sizeof d->why, "%s has no %s", d->soname,
                     d->names[i]);
            dlclose(h);
            return -1;
        }
        /* a function's address through void *: POSIX guarantees it */
        memcpy((char *)d->slots + i * sizeof f, &f, sizeof f);
    }
    return 1;
}

int
dynlib_load(struct dynlib *d)
{
    pthread_mutex_lock(&lock);
    if (d->state == 0)
        d->state = load(d);
    int state = d->state;
    pthread_mutex_unlock(&lock);
    return state == 1 ? 0 : -1;
}
