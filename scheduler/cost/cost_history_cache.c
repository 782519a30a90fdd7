/*
 * The runtime's parsed history.json, shared by its cost models.
 *
 * Every plan opens a cost model, and parsing a history file of a megabyte costs tens of
 * milliseconds: far more than placing a small graph. So a runtime parses each cache folder's
 * history.json once and keeps it as an immutable snapshot (cost_snapshot) that every model it
 * opens reads under its own table; it parses again only when the file changed on disk: another
 * device or inode (a save renames a new file over the old one), another size, modification or
 * change time. A file whose modification time was less than COST_RACY_S before it was read may
 * still change within the file system's timestamp granularity without these changing, so until
 * it is older its content is compared too (an XXH3 hash of the bytes: reading a megabyte costs
 * a fraction of a millisecond, parsing it twenty). A save by this runtime drops the snapshot
 * at once. Models keep their snapshot (a reference) for their lifetime: a model sees the
 * history as it was when it opened, plus what it learned, exactly as when each model parsed the
 * file itself.
 */
#include "cost_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* Seconds after its last modification from which a file's times alone say it is unchanged. */
#define COST_RACY_S 2

struct cost_cache_entry {
    struct cost_cache_entry *next;
    char *path;
    int valid;   /* the fields below describe the file the snapshot was parsed from */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    uint64_t hash;    /* XXH3 of its bytes */
    int trusted;      /* it was COST_RACY_S old when last read: its times alone decide */
    cost_snapshot *snap; /* one reference; NULL: the file held no usable history */
};

void cost_snapshot_release(cost_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    cost_table_free(&s->table);
    free(s->group_count);
    free(s);
}

static void entry_clear(struct cost_cache_entry *e)
{
    cost_snapshot_release(e->snap);
    e->snap = NULL;
    e->valid = 0;
}

static int same_file(const struct cost_cache_entry *e, const struct stat *st)
{
    return e->valid && e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           e->mtim.tv_sec == st->st_mtim.tv_sec && e->mtim.tv_nsec == st->st_mtim.tv_nsec &&
           e->ctim.tv_sec == st->st_ctim.tv_sec && e->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

/* Whether a file modified at MTIM is COST_RACY_S old now. */
static int old_enough(const struct timespec *mtim)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec - mtim->tv_sec >= COST_RACY_S;
}

/* The bytes of the regular file PATH into *TEXT (caller frees) and its status into *ST; 0 when
 * it cannot be read (missing, not a regular file, out of memory). */
static int read_all(const char *path, char **text, size_t *len, struct stat *st)
{
    *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_size < 0) {
        close(fd);
        return 0;
    }
    size_t cap = (size_t)st->st_size, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == cap)
            break;
    }
    close(fd);
    if (!buf || n != cap) { /* changed while read: parse it the ordinary way */
        free(buf);
        return 0;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 1;
}

cost_snapshot *cost_history_acquire(cost_model *m)
{
    loom_runtime *rt = m->rt;
    char path[4200];
    snprintf(path, sizeof path, "%s/history.json", m->cache_dir);
    pthread_mutex_lock(&rt->cost_lock);
    struct cost_cache_entry *e = rt->cost_cache;
    while (e && strcmp(e->path, path) != 0)
        e = e->next;
    if (!e && (e = calloc(1, sizeof *e))) {
        if (!(e->path = strdup(path))) {
            free(e);
            e = NULL; /* out of memory: parsed for this model alone */
        } else {
            e->next = rt->cost_cache;
            rt->cost_cache = e;
        }
    }
    cost_snapshot *snap = NULL;
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (e)
            entry_clear(e); /* no file: no history */
        goto out;
    }
    if (e && same_file(e, &st) && e->trusted) {
        snap = e->snap;
        goto take;
    }
    char *text = NULL;
    size_t len = 0;
    int readable = S_ISREG(st.st_mode) && read_all(path, &text, &len, &st);
    uint64_t hash = readable ? XXH3_64bits(text, len) : 0;
    if (e && readable && same_file(e, &st) && hash == e->hash) {
        free(text);
        e->trusted = old_enough(&st.st_mtim);
        snap = e->snap;
        goto take;
    }
    int rewritten = 0;
    snap = cost_history_parse(m, text, len, &rewritten);
    free(text);
    rt->cost_history_parses++;
    if (e) {
        entry_clear(e);
        if (readable && !rewritten) {
            /* A file rewritten while parsing (malformed entries dropped) is parsed again. */
            e->valid = 1;
            e->dev = st.st_dev;
            e->ino = st.st_ino;
            e->size = st.st_size;
            e->mtim = st.st_mtim;
            e->ctim = st.st_ctim;
            e->hash = hash;
            e->trusted = old_enough(&st.st_mtim);
            e->snap = snap; /* the cache's reference */
            if (snap)
                atomic_fetch_add(&snap->refs, 1);
        }
    }
    pthread_mutex_unlock(&rt->cost_lock);
    return snap; /* the model's reference: the one parse made */
take:
    if (snap)
        atomic_fetch_add(&snap->refs, 1);
out:
    pthread_mutex_unlock(&rt->cost_lock);
    return snap;
}

void cost_history_invalidate(cost_model *m)
{
    loom_runtime *rt = m->rt;
    char path[4200];
    snprintf(path, sizeof path, "%s/history.json", m->cache_dir);
    pthread_mutex_lock(&rt->cost_lock);
    for (struct cost_cache_entry *e = rt->cost_cache; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            entry_clear(e);
    pthread_mutex_unlock(&rt->cost_lock);
}

void cost_history_cache_free(loom_runtime *rt)
{
    struct cost_cache_entry *e = rt->cost_cache;
    while (e) {
        struct cost_cache_entry *next = e->next;
        entry_clear(e);
        free(e->path);
        free(e);
        e = next;
    }
    rt->cost_cache = NULL;
}

uint64_t cost_history_parses(const loom_runtime *rt)
{
    if (!rt)
        return 0;
    loom_runtime *w = (loom_runtime *)rt; /* the lock is the only thing touched */
    pthread_mutex_lock(&w->cost_lock);
    uint64_t n = rt->cost_history_parses;
    pthread_mutex_unlock(&w->cost_lock);
    return n;
}
