/* Describe an image, then ask a follow-up question: the pixtral C ABI end to end.
 *
 *   cargo build --release -p pixtral-capi
 *   cc examples/c/describe.c -Icapi/include -Ltarget/release -lpixtral -o describe
 *   LD_LIBRARY_PATH=target/release ./describe examples/demo/pixtral-demo.gguf examples/blue-triangle.png
 *
 * Arguments: MODEL.gguf IMAGE [THREADS] (THREADS 1: no worker threads; default: the CPUs). The answers stream to
 * stdout; counts go to stderr. Exit status 0 when every step did what it should. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pixtral.h"

/* Print each piece of the answer as it comes. */
static bool on_token(void *user_data, const char *text, size_t len, uint32_t token) {
    (void)token;
    size_t *pieces = user_data;
    *pieces += 1;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

static int fail(const char *what, pixtral_status s) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)s, pixtral_last_error());
    return 1;
}

/* Answer what was added to `chat`, streaming it; the result in *out. */
static pixtral_status answer(pixtral_chat *chat, pixtral_result **out) {
    pixtral_generate_options g = pixtral_generate_options_default();
    g.temperature = 0; /* greedy: the same answer on every machine */
    g.max_tokens = 48;
    size_t pieces = 0;
    pixtral_status s = pixtral_chat_generate(chat, &g, on_token, &pieces, out);
    if (s == PIXTRAL_OK) {
        pixtral_usage u = pixtral_result_usage(*out);
        printf("\n");
        fprintf(stderr, "[%zu pieces; prompt %llu tokens, %llu from the KV cache; %llu answer tokens; images %llu encoded, %llu cached]\n",
                pieces, (unsigned long long)u.prompt_tokens, (unsigned long long)u.cached_tokens,
                (unsigned long long)u.completion_tokens, (unsigned long long)u.images_encoded,
                (unsigned long long)u.images_cached);
    }
    return s;
}

/* The whole file in memory (the caller frees it), or NULL. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 65536;
            unsigned char *b = realloc(buf, cap);
            if (!b) { free(buf); fclose(f); return NULL; }
            buf = b;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf IMAGE [THREADS]\n", argv[0]);
        return 2;
    }
    pixtral_model_options mo = pixtral_model_options_default();
    if (argc > 3) mo.n_threads = (uint32_t)atoi(argv[3]);
    pixtral_model *model = NULL;
    pixtral_status s = pixtral_model_load(argv[1], &mo, &model);
    if (s != PIXTRAL_OK) return fail("pixtral_model_load", s);
    fprintf(stderr, "pixtral %s, vision: %s\n", pixtral_version(), pixtral_model_has_vision(model) ? "yes" : "no");

    pixtral_chat *chat = NULL;
    s = pixtral_chat_new(model, NULL, &chat);
    if (s != PIXTRAL_OK) return fail("pixtral_chat_new", s);
    /* the chat keeps the model alive: the handle can go now */
    pixtral_model_free(model);

    int rc = 0;
    pixtral_result *r = NULL;

    /* 1. an image from a file, then the question */
    pixtral_chat_add_image_path(chat, argv[2]);
    pixtral_chat_add_text(chat, "What shape is this?");
    s = answer(chat, &r);
    if (s != PIXTRAL_OK) { rc = fail("describe", s); goto out; }
    pixtral_result_free(r);

    /* 2. a follow-up: only the new message is evaluated */
    pixtral_chat_add_text(chat, "What colour is it?");
    s = answer(chat, &r);
    if (s != PIXTRAL_OK) { rc = fail("follow-up", s); goto out; }
    if (pixtral_result_usage(r).cached_tokens == 0) { fprintf(stderr, "expected a KV cache hit\n"); rc = 1; }
    pixtral_result_free(r);

    /* 3. a file that is not there: an error naming it, and the chat goes on */
    pixtral_chat_add_image_path(chat, "no-such-image.png");
    pixtral_chat_add_text(chat, "And this one?");
    s = answer(chat, &r);
    if (s != PIXTRAL_ERR_IO || !strstr(pixtral_last_error(), "no-such-image.png")) {
        fprintf(stderr, "expected PIXTRAL_ERR_IO naming the file, got %d: %s\n", (int)s, pixtral_last_error());
        rc = 1;
        if (s == PIXTRAL_OK) pixtral_result_free(r);
    } else {
        fprintf(stderr, "error, as expected: %s\n", pixtral_last_error());
    }

    /* 4. the same image again, from memory: its features come from the cache */
    size_t len = 0;
    unsigned char *bytes = read_file(argv[2], &len);
    if (!bytes) { fprintf(stderr, "cannot read %s\n", argv[2]); rc = 1; goto out; }
    pixtral_chat_reset(chat);
    pixtral_chat_add_image_bytes(chat, bytes, len);
    free(bytes);
    pixtral_chat_add_text(chat, "What shape is this?");
    s = answer(chat, &r);
    if (s != PIXTRAL_OK) { rc = fail("from memory", s); goto out; }
    if (pixtral_result_usage(r).images_cached != 1) { fprintf(stderr, "expected the image cache to serve it\n"); rc = 1; }
    pixtral_result_free(r);

out:
    pixtral_chat_free(chat);
    return rc;
}
