/* The C ABI given bad input: every fault is a status and a message naming what is at fault, never a crash; run
 * under valgrind by scripts/test-c.sh. Arguments: DEMO_MODEL.gguf IMAGE. Prints one line per check; exit status 0
 * when every check holds. */
#include <stdio.h>
#include <string.h>

#include "pixtral.h"

static int failures = 0;

/* `s` must be `want` and the thread's message must contain `needle`. */
static void expect(const char *what, pixtral_status s, pixtral_status want, const char *needle) {
    const char *msg = s == PIXTRAL_OK ? "" : pixtral_last_error();
    if (s != want || !strstr(msg, needle)) {
        fprintf(stderr, "FAIL %s: status %d (want %d), message \"%s\" (want \"%s\")\n", what, (int)s, (int)want, msg,
                needle);
        failures++;
    } else {
        printf("ok   %s: %s\n", what, msg);
    }
}

/* Cancels its chat from inside the callback at the second token, as another thread would. */
static bool cancel_at_second(void *user_data, const char *text, size_t len, uint32_t token) {
    (void)text; (void)len; (void)token;
    static int n = 0;
    if (++n == 2) pixtral_chat_cancel((const pixtral_chat *)user_data);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DEMO_MODEL.gguf IMAGE\n", argv[0]);
        return 2;
    }
    pixtral_model *m = NULL;
    pixtral_chat *c = NULL;
    pixtral_result *r = NULL;
    pixtral_model_options mo = pixtral_model_options_default();
    mo.n_threads = 1;

    expect("load NULL path", pixtral_model_load(NULL, &mo, &m), PIXTRAL_ERR_ARGUMENT, "path is NULL");
    expect("load NULL out", pixtral_model_load(argv[1], &mo, NULL), PIXTRAL_ERR_ARGUMENT, "out is NULL");
    expect("load a missing file", pixtral_model_load("missing.gguf", &mo, &m), PIXTRAL_ERR_IO, "missing.gguf");
    expect("load an image as a model", pixtral_model_load(argv[2], &mo, &m), PIXTRAL_ERR_MODEL, "GGUF");
    mo.n_threads = 1000000;
    expect("a million threads", pixtral_model_load(argv[1], &mo, &m), PIXTRAL_ERR_ARGUMENT, "options.n_threads");
    mo.n_threads = 1;
    expect("load with invalid UTF-8", pixtral_model_load("\xff\xfe.gguf", &mo, &m), PIXTRAL_ERR_ARGUMENT, "UTF-8");
    mo.mmproj = "missing.mmproj.gguf";
    expect("load a missing mmproj", pixtral_model_load(argv[1], &mo, &m), PIXTRAL_ERR_IO, "missing.mmproj.gguf");
    mo.mmproj = NULL;
    if (m != NULL) { fprintf(stderr, "FAIL: *out must stay NULL on failure\n"); failures++; }

    /* a text-only model: images are a request error */
    mo.vision = false;
    expect("load text only", pixtral_model_load(argv[1], &mo, &m), PIXTRAL_OK, "");
    const uint8_t *piece = NULL;
    size_t n = pixtral_model_token_piece(m, 1, &piece);
    if (pixtral_model_n_vocab(m) < 1000 || n != 3 || memcmp(piece, "<s>", 3) != 0) {
        fprintf(stderr, "FAIL: token 1 is <s> in a vocabulary of over 1000\n");
        failures++;
    }
    expect("chat NULL model", pixtral_chat_new(NULL, NULL, &c), PIXTRAL_ERR_ARGUMENT, "model is NULL");
    pixtral_chat_options co = pixtral_chat_options_default();
    co.n_ctx = 0;
    expect("chat of 0 tokens", pixtral_chat_new(m, &co, &c), PIXTRAL_ERR_ARGUMENT, "n_ctx");
    expect("chat", pixtral_chat_new(m, NULL, &c), PIXTRAL_OK, "");
    expect("generate with nothing added", pixtral_chat_generate(c, NULL, NULL, NULL, &r), PIXTRAL_ERR_ARGUMENT,
           "nothing to answer");
    pixtral_chat_add_image_path(c, argv[2]);
    pixtral_chat_add_text(c, "What shape is this?");
    expect("an image without a vision tower", pixtral_chat_generate(c, NULL, NULL, NULL, &r), PIXTRAL_ERR_REQUEST,
           "vision");
    pixtral_chat_free(c);
    pixtral_model_free(m);
    c = NULL;
    m = NULL;

    mo.vision = true;
    expect("load with vision", pixtral_model_load(argv[1], &mo, &m), PIXTRAL_OK, "");
    co = pixtral_chat_options_default();
    co.image_max_side = 8;
    expect("an image budget below a patch", pixtral_chat_new(m, &co, &c), PIXTRAL_ERR_ARGUMENT,
           "options.image_max_side");
    co = pixtral_chat_options_default();
    co.n_ctx = 40;
    expect("a small chat", pixtral_chat_new(m, &co, &c), PIXTRAL_OK, "");
    pixtral_model_free(m); /* the chat keeps it */

    /* faults of the message's parts: found when it is sent, the chat goes on */
    expect("text NULL", pixtral_chat_add_text(c, NULL), PIXTRAL_ERR_ARGUMENT, "text is NULL");
    expect("add to NULL chat", pixtral_chat_add_text(NULL, "hi"), PIXTRAL_ERR_ARGUMENT, "chat is NULL");
    expect("bytes NULL", pixtral_chat_add_image_bytes(c, NULL, 10), PIXTRAL_ERR_ARGUMENT, "data is NULL");
    const unsigned char junk[] = "not an image at all";
    pixtral_chat_add_image_bytes(c, junk, sizeof junk);
    pixtral_chat_add_text(c, "hi");
    expect("bytes that are not an image", pixtral_chat_generate(c, NULL, NULL, NULL, &r), PIXTRAL_ERR_INPUT,
           "not a PNG, JPEG, WebP or GIF");
    unsigned char px[3] = {1, 2, 3};
    pixtral_chat_add_image_rgb8(c, px, 0, 1);
    pixtral_chat_add_text(c, "hi");
    expect("pixels of 0x1", pixtral_chat_generate(c, NULL, NULL, NULL, &r), PIXTRAL_ERR_INPUT, "no pixels");
    pixtral_chat_add_image_path(c, argv[2]);
    pixtral_chat_add_text(c, "What shape is this?");
    expect("an image larger than the context", pixtral_chat_generate(c, NULL, NULL, NULL, &r), PIXTRAL_ERR_REQUEST,
           "context holds 40: use a larger n_ctx");

    pixtral_generate_options g = pixtral_generate_options_default();
    g.top_p = 2;
    pixtral_chat_add_text(c, "hi");
    expect("top_p 2", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_ERR_ARGUMENT, "options.top_p is 2");
    g = pixtral_generate_options_default();
    g.top_logprobs = 21;
    pixtral_chat_add_text(c, "hi");
    expect("top_logprobs 21", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_ERR_ARGUMENT,
           "options.top_logprobs is 21");
    g = pixtral_generate_options_default();
    g.n_stop = 1;
    pixtral_chat_add_text(c, "hi");
    expect("n_stop without stop", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_ERR_ARGUMENT, "options.stop");

    /* cancelled mid-answer (as from another thread): a result, finished CANCELLED, the chat usable after */
    g = pixtral_generate_options_default();
    g.temperature = 0;
    g.max_tokens = 30;
    pixtral_chat_add_text(c, "Hello");
    expect("cancel mid-answer", pixtral_chat_generate(c, &g, cancel_at_second, c, &r), PIXTRAL_OK, "");
    if (r && (pixtral_result_finish_reason(r) != PIXTRAL_FINISH_CANCELLED || pixtral_result_usage(r).completion_tokens != 2)) {
        fprintf(stderr, "FAIL: expected CANCELLED after 2 tokens, got %d after %llu\n",
                (int)pixtral_result_finish_reason(r), (unsigned long long)pixtral_result_usage(r).completion_tokens);
        failures++;
    }
    pixtral_result_free(r);
    r = NULL;
    /* raised while idle: the next call is cancelled before it answers, the one after is not */
    pixtral_chat_cancel(c);
    pixtral_chat_add_text(c, "Hello");
    expect("cancelled while idle", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_ERR_CANCELLED, "cancelled");
    pixtral_chat_add_text(c, "Hello");
    g.top_logprobs = 2;
    expect("the chat goes on", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_OK, "");
    /* the alternatives are tokens of the vocabulary, spelled by pixtral_model_token_piece */
    uint32_t ids[2];
    float lps[2], lp = 1;
    if (pixtral_result_logprobs(r, 0, &lp, ids, lps, 2) != 2 || lps[0] < lps[1] || lp != lps[0] || ids[0] == ids[1]) {
        fprintf(stderr, "FAIL: two alternatives, likeliest first\n");
        failures++;
    }
    pixtral_result_free(r);
    r = NULL;
    g.top_logprobs = 0;
    if (!pixtral_chat_undo(c)) { fprintf(stderr, "FAIL: undo\n"); failures++; }
    expect("set the system prompt", pixtral_chat_set_system(c, "Be brief."), PIXTRAL_OK, "");
    pixtral_chat_add_text(c, "Hello");
    expect("after undo", pixtral_chat_generate(c, &g, NULL, NULL, &r), PIXTRAL_OK, "");
    lp = 1;
    if (pixtral_result_text(r) == NULL || pixtral_result_logprobs(r, 0, &lp, NULL, NULL, 0) != 0 || lp != 1) {
        fprintf(stderr, "FAIL: a result without logprobs\n");
        failures++;
    }
    pixtral_result_free(r);

    /* NULL everywhere a handle is read: no crash */
    pixtral_result_free(NULL);
    pixtral_chat_free(NULL);
    pixtral_model_free(NULL);
    pixtral_chat_cancel(NULL);
    if (pixtral_result_text(NULL) != NULL || pixtral_result_tokens(NULL, NULL) != 0) failures++;
    uint64_t used = 7, cap = 7;
    pixtral_chat_context(NULL, &used, &cap);
    if (used != 0 || cap != 0) { fprintf(stderr, "FAIL: a NULL chat's context is 0/0\n"); failures++; }
    if (pixtral_model_token_piece(NULL, 1, &piece) != 0) failures++;
    pixtral_chat_free(c);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "all checks hold", failures);
    return failures ? 1 : 0;
}
