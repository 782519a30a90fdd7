/*
 * Backend options (backend ABI 1.0, issue 15): "BACKEND:KEY=VALUE" strings given through
 * loom_runtime_options.backend_options reach the backend's set_option before its devices are
 * listed, are listed back by loom_runtime_backend_option, and every kind of mistake (a
 * malformed string, a backend that is not loaded, a key it does not declare, a value it
 * refuses) fails loom_runtime_create with LOOM_ERR_INVALID_ARGUMENT naming the option. The
 * npu-sim plugin (argv[1]) is the backend under test: its profile and devices options, and the
 * environment variables they replace, kept as a fallback.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *plugin_path;
static char profile_path[] = "/tmp/loom-test-options-XXXXXX";

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

static int suite_init(void)
{
    unsetenv("LOOM_NPU_SIM_PROFILE");
    unsetenv("LOOM_NPU_SIM_DEVICES");
    int fd = mkstemp(profile_path);
    if (fd < 0)
        return 1;
    FILE *f = fdopen(fd, "w");
    if (!f)
        return 1;
    fputs("{\"name\": \"options-npu\", \"tops_int8\": 20, \"tflops_fp16\": 8, "
          "\"bandwidth_gbs\": 64, \"dispatch_latency_us\": 5, \"memory_mb\": 512}\n", f);
    return fclose(f) == 0 ? 0 : 1;
}

static int suite_clean(void)
{
    unlink(profile_path);
    return 0;
}

/* loom_runtime_create with the npu-sim plugin only (no LOOM_BACKEND_PATH) and OPTIONS. */
static loom_status create(const char *const *options, size_t n, loom_runtime **rt)
{
    const char *paths[] = {plugin_path};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths,
                              .n_plugin_paths = 1, .no_default_plugins = 1,
                              .backend_options = options, .n_backend_options = n};
    *rt = NULL;
    return loom_runtime_create(&o, rt);
}

/* How many devices of RT have ids starting with PREFIX ("npu-sim:"). */
static size_t count_devices(const loom_runtime *rt, const char *prefix, char *name, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
        if (loom_runtime_device(rt, i, id, sizeof id, &info) != LOOM_OK)
            continue;
        if (!strncmp(id, prefix, strlen(prefix))) {
            n++;
            if (name)
                snprintf(name, len, "%s", info.name);
        }
    }
    return n;
}

/* The index of backend NAME in RT's listing, or -1. */
static long backend_index(const loom_runtime *rt, const char *name)
{
    for (size_t b = 0; b < loom_runtime_backend_count(rt); b++) {
        const char *n = NULL;
        if (loom_runtime_backend_info(rt, b, &n, NULL, NULL) == LOOM_OK && n && !strcmp(n, name))
            return (long)b;
    }
    return -1;
}

static void test_options_configure_the_plugin_and_are_listed(void)
{
    char profile_opt[256];
    snprintf(profile_opt, sizeof profile_opt, "npu-sim:profile=%s", profile_path);
    const char *opts[] = {profile_opt, "npu-sim:devices=3", "npu-sim:devices=2"};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL_FATAL(create(opts, 3, &rt), LOOM_OK);
    char name[128] = "";
    /* the last of two values wins, as set_option saw them in order */
    CU_ASSERT_EQUAL(count_devices(rt, "npu-sim:", name, sizeof name), 2);
    CU_ASSERT(contains(name, "options-npu"));
    CU_ASSERT(contains(name, "20 TOPS"));
    long b = backend_index(rt, "npu-sim");
    CU_ASSERT_FATAL(b >= 0);
    size_t n_opt = 0;
    uint32_t abi = 0;
    CU_ASSERT_EQUAL(loom_runtime_backend_info(rt, (size_t)b, NULL, &abi, &n_opt), LOOM_OK);
    CU_ASSERT_EQUAL(abi >> 16, LOOM_ABI_VERSION_MAJOR);
    CU_ASSERT_EQUAL(n_opt, 2);
    int saw_profile = 0, saw_devices = 0;
    for (size_t j = 0; j < n_opt; j++) {
        const loom_backend_option *o = NULL;
        const char *value = NULL;
        CU_ASSERT_EQUAL_FATAL(loom_runtime_backend_option(rt, (size_t)b, j, &o, &value),
                              LOOM_OK);
        CU_ASSERT_PTR_NOT_NULL(o->help);
        CU_ASSERT_PTR_NOT_NULL(o->default_value);
        if (!strcmp(o->key, "profile")) {
            saw_profile = 1;
            CU_ASSERT_STRING_EQUAL(value, profile_path);
        } else if (!strcmp(o->key, "devices")) {
            saw_devices = 1;
            CU_ASSERT_STRING_EQUAL(value, "2");
            CU_ASSERT_STRING_EQUAL(o->default_value, "1");
        }
    }
    CU_ASSERT(saw_profile && saw_devices);
    /* Out of range: an error, not a crash. */
    CU_ASSERT_EQUAL(loom_runtime_backend_option(rt, (size_t)b, n_opt, NULL, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_runtime_backend_info(rt, loom_runtime_backend_count(rt), NULL, NULL,
                                              NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_runtime_backend_info(NULL, 0, NULL, NULL, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_runtime_backend_count(NULL), 0);
    /* The cpu backend is listed too; options it does not set read as NULL. */
    CU_ASSERT(backend_index(rt, "cpu") >= 0);
    loom_runtime_destroy(rt);

    /* No option given: the defaults (one device, the built-in profile), values NULL. */
    CU_ASSERT_EQUAL_FATAL(create(NULL, 0, &rt), LOOM_OK);
    CU_ASSERT_EQUAL(count_devices(rt, "npu-sim:", name, sizeof name), 1);
    CU_ASSERT(contains(name, "edge-npu-10tops"));
    b = backend_index(rt, "npu-sim");
    const char *value = "unset";
    CU_ASSERT_EQUAL(loom_runtime_backend_option(rt, (size_t)b, 0, NULL, &value), LOOM_OK);
    CU_ASSERT_PTR_NULL(value);
    loom_runtime_destroy(rt);
}

/* Each bad option: LOOM_ERR_INVALID_ARGUMENT, no runtime, a message with every NEEDLE. */
static void expect_refused(const char *const *opts, size_t n, const char *needle1,
                           const char *needle2)
{
    loom_runtime *rt = (loom_runtime *)1;
    CU_ASSERT_EQUAL(create(opts, n, &rt), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(rt);
    const char *err = loom_last_error();
    if (!contains(err, needle1) || (needle2 && !contains(err, needle2)))
        printf("\n  message: %s (wanted '%s'%s%s)\n", err, needle1, needle2 ? ", " : "",
               needle2 ? needle2 : "");
    CU_ASSERT(contains(err, needle1));
    if (needle2)
        CU_ASSERT(contains(err, needle2));
    if (rt && rt != (loom_runtime *)1)
        loom_runtime_destroy(rt);
}

static void test_unknown_key_is_refused_naming_it(void)
{
    const char *o[] = {"npu-sim:frob=1"};
    expect_refused(o, 1, "npu-sim:frob=1", "no option 'frob' (it declares: profile, devices)");
    /* the cpu backend declares none */
    const char *c[] = {"cpu:threads=2"};
    expect_refused(c, 1, "cpu:threads=2", "declares none");
}

static void test_unknown_backend_is_refused_naming_it(void)
{
    const char *o[] = {"npu-sim:devices=2", "nosuch:profile=x.json"};
    expect_refused(o, 2, "nosuch:profile=x.json", "no backend 'nosuch' is loaded");
}

static void test_refused_value_carries_the_backends_message(void)
{
    const char *o[] = {"npu-sim:devices=99"};
    expect_refused(o, 1, "npu-sim:devices=99", "not a device count (1 to 16)");
    const char *p[] = {"npu-sim:profile=/nonexistent/edge.json"};
    expect_refused(p, 1, "refused by backend 'npu-sim'", "/nonexistent/edge.json");
    const char *e[] = {"npu-sim:profile="};
    expect_refused(e, 1, "npu-sim:profile=", "needs a file name");
}

static void test_malformed_strings_are_refused(void)
{
    const char *bad[] = {"npu-sim-profile", "npu-sim:profile", ":profile=x", "npu-sim:=x",
                         "npu sim:profile=x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *o[] = {bad[i]};
        expect_refused(o, 1, "malformed", "BACKEND:KEY=VALUE");
    }
    const char *with_null[] = {"npu-sim:devices=2", NULL};
    expect_refused(with_null, 2, "backend_options[1] is NULL", NULL);
    expect_refused(NULL, 1, "backend_options is NULL", NULL);
}

static void test_environment_remains_a_fallback(void)
{
    setenv("LOOM_NPU_SIM_DEVICES", "3", 1);
    setenv("LOOM_NPU_SIM_PROFILE", profile_path, 1);
    loom_runtime *rt = NULL;
    char name[128] = "";
    CU_ASSERT_EQUAL(create(NULL, 0, &rt), LOOM_OK);
    CU_ASSERT_EQUAL(count_devices(rt, "npu-sim:", name, sizeof name), 3);
    CU_ASSERT(contains(name, "options-npu"));
    loom_runtime_destroy(rt);
    /* an option given overrides the variable */
    const char *o[] = {"npu-sim:devices=1"};
    CU_ASSERT_EQUAL(create(o, 1, &rt), LOOM_OK);
    CU_ASSERT_EQUAL(count_devices(rt, "npu-sim:", NULL, 0), 1);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_NPU_SIM_DEVICES");
    unsetenv("LOOM_NPU_SIM_PROFILE");
}

static void test_older_options_struct_reads_no_options(void)
{
    /* A caller built before backend_options existed: its struct ends before the field. */
    struct {
        loom_runtime_options o;
        char tail[64];
    } s;
    memset(&s, 0xff, sizeof s); /* garbage where the new fields would be */
    s.o.struct_size = (uint32_t)offsetof(loom_runtime_options, backend_options);
    s.o.cpu_threads = 0;
    s.o.plugin_paths = NULL;
    s.o.n_plugin_paths = 0;
    s.o.no_default_plugins = 1;
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(&s.o, &rt), LOOM_OK);
    loom_runtime_destroy(rt);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/loom-npu-sim.so\n", argv[0]);
        return 2;
    }
    plugin_path = argv[1];
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("backend_options", suite_init, suite_clean);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"options_configure_the_plugin_and_are_listed",
         test_options_configure_the_plugin_and_are_listed},
        {"unknown_key_is_refused_naming_it", test_unknown_key_is_refused_naming_it},
        {"unknown_backend_is_refused_naming_it", test_unknown_backend_is_refused_naming_it},
        {"refused_value_carries_the_backends_message",
         test_refused_value_carries_the_backends_message},
        {"malformed_strings_are_refused", test_malformed_strings_are_refused},
        {"environment_remains_a_fallback", test_environment_remains_a_fallback},
        {"older_options_struct_reads_no_options", test_older_options_struct_reads_no_options},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
