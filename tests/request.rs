//! The library's request path (`Engine`, `Request`, `GenerateOptions`, `Completion`) on the demo model: images from
//! every kind of source give the same features, an image sent again is not encoded again, the KV prefix is
//! reused, stop strings, log-probabilities, cancellation and the checks that run before any pixel is decoded.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use pixtral::runtime::request::content_with_markers;
use pixtral::{
    Conversation, Engine, EngineOptions, Error, FinishReason, GenerateOptions, ImageSource, Part, Request,
    RequestMessage, SamplerParams, SessionOptions,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn engine() -> Engine {
    Engine::load(root().join("examples/demo/pixtral-demo.gguf"), &EngineOptions::default()).unwrap()
}

fn triangle() -> PathBuf {
    root().join("examples/blue-triangle.png")
}

fn greedy(n: usize) -> GenerateOptions<'static> {
    GenerateOptions { max_tokens: n, sampling: SamplerParams::greedy(), ..Default::default() }
}

fn ask(image: ImageSource, q: &str) -> Request {
    Request::user(vec![Part::Image(image), Part::Text(q.into())])
}

#[test]
fn an_image_sent_again_is_neither_encoded_nor_prefilled_again() {
    let e = engine();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let c1 = e.complete(&mut s, &mut conv, &ask(ImageSource::Path(triangle()), "What shape is this?"), &mut greedy(16));
    let c1 = c1.unwrap();
    assert_eq!(c1.text, "A triangle.");
    assert_eq!(c1.finish_reason, FinishReason::Stop);
    assert_eq!((c1.usage.images_encoded, c1.usage.images_cached, c1.usage.cached_tokens), (1, 0, 0));
    assert!(c1.timings.image_encode_s > 0.0);
    assert_eq!(e.image_cache_usage().0, 1);

    // the same file's bytes from memory: the cache has its features, the session has its tokens
    let bytes = std::fs::read(triangle()).unwrap();
    let req = ask(ImageSource::Encoded { name: "upload".into(), bytes }, "What shape is this?");
    let c2 = e.complete(&mut s, &mut conv, &req, &mut greedy(16)).unwrap();
    assert_eq!(c2.text, "A triangle.");
    assert_eq!((c2.usage.images_encoded, c2.usage.images_cached), (0, 1));
    assert_eq!(c2.timings.image_encode_s, 0.0);
    // everything but the last prompt token (its logits start the answer) came from the KV cache
    assert_eq!(c2.usage.cached_tokens, c2.usage.prompt_tokens - 1);

    // another image in the same place: the cache reuse stops where the images differ
    let other = root().join("examples/red-circle.png");
    let c3 = e.complete(&mut s, &mut conv, &ask(ImageSource::Path(other), "What shape is this?"), &mut greedy(16));
    let c3 = c3.unwrap();
    assert_eq!(c3.usage.images_encoded, 1);
    assert!(c3.usage.cached_tokens <= 2, "BOS and [INST] only, got {}", c3.usage.cached_tokens);
    assert_ne!(c3.text, "A triangle.");
}

#[test]
fn raw_rgb8_pixels_give_the_features_of_the_encoded_file() {
    let e = engine();
    let rgb = pixtral::image::load(&triangle()).unwrap();
    let pixels: Vec<u8> = rgb.data.iter().map(|&v| v as u8).collect();
    assert!(rgb.data.iter().zip(&pixels).all(|(&f, &b)| f == b as f32), "the PNG is opaque RGB8");
    let raw = ImageSource::Rgb8 { width: rgb.width, height: rgb.height, pixels };
    let heads = [e.inspect(&ImageSource::Path(triangle()), None).unwrap(), e.inspect(&raw, None).unwrap()];
    assert_ne!(heads[0].key, heads[1].key, "keys follow the source");
    let enc = e.encode(&heads, Vec::new(), &mut |_, _| {}).unwrap();
    assert_eq!(enc.encoded, 2);
    assert_eq!(enc.images[0].embeds, enc.images[1].embeds);
    // and one image twice in one request is encoded once
    let twice = [heads[0].clone(), heads[0].clone()];
    let e2 = engine();
    let enc = e2.encode(&twice, Vec::new(), &mut |_, _| {}).unwrap();
    assert_eq!((enc.encoded, enc.cached), (1, 1));
    assert!(std::sync::Arc::ptr_eq(&enc.images[0], &enc.images[1]));
}

#[test]
fn stop_strings_end_the_answer_and_the_callback_sees_exactly_the_answer() {
    let e = engine();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let mut pieces = String::new();
    let mut ids = Vec::new();
    let mut opts = GenerateOptions {
        stop: vec!["angle".into()],
        on_token: Some(Box::new(|t: &pixtral::TokenEvent| {
            pieces.push_str(t.text);
            ids.push(t.id);
            true
        })),
        ..greedy(16)
    };
    let c = e.complete(&mut s, &mut conv, &ask(ImageSource::Path(triangle()), "What shape is this?"), &mut opts);
    drop(opts);
    let c = c.unwrap();
    assert_eq!(c.text, "A tri");
    assert_eq!(pieces, c.text);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.stop_string.as_deref(), Some("angle"));
    assert_eq!(ids, c.tokens);
}

#[test]
fn log_probabilities_are_the_softmax_of_the_logits() {
    let e = engine();
    let req = Request::user(vec![Part::Text("Count to five.".into())]);
    let prepared = e.prepare(&req).unwrap();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let c = e.complete(&mut s, &mut conv, &req, &mut GenerateOptions { top_logprobs: 3, ..greedy(4) }).unwrap();
    assert_eq!(c.logprobs.len(), c.tokens.len());
    // the first step from the prompt's logits, log-softmax in f64 here
    let mut fresh = e.session(SessionOptions::default()).unwrap();
    let logits = fresh.eval(&prepared.ids, None, None).unwrap().to_vec();
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
    let first = &c.logprobs[0];
    for (k, &(id, lp)) in first.top.iter().enumerate() {
        assert_eq!(id as usize, order[k]);
        assert!((lp as f64 - (logits[order[k]] as f64 - lse)).abs() < 1e-5, "{lp}");
    }
    for lp in &c.logprobs {
        // greedy: the token drawn is the likeliest
        assert_eq!(lp.id, lp.top[0].0);
        assert_eq!(lp.logprob, lp.top[0].1);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1) && lp.top.iter().all(|t| t.1 <= 0.0));
        assert!(lp.top.iter().map(|t| (t.1 as f64).exp()).sum::<f64>() <= 1.0 + 1e-6);
    }
}

#[test]
fn the_callback_and_the_flag_cancel() {
    let e = engine();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let req = Request::user(vec![Part::Text("Count to five.".into())]);
    let mut opts = GenerateOptions { on_token: Some(Box::new(|_: &pixtral::TokenEvent| false)), ..greedy(16) };
    let c = e.complete(&mut s, &mut conv, &req, &mut opts).unwrap();
    assert_eq!((c.finish_reason, c.tokens.len()), (FinishReason::Cancelled, 1));
    // raised before the prefill: nothing evaluated, an error, the conversation without an answer
    let flag = AtomicBool::new(true);
    let before = s.context_used().0;
    let err = e.complete(&mut s, &mut conv, &req, &mut GenerateOptions { cancel: Some(&flag), ..greedy(16) });
    assert!(matches!(err, Err(Error::Cancelled)), "{err:?}");
    assert!(s.context_used().0 < before, "rewound to the shared prefix, nothing new evaluated");
    assert_eq!(conv.messages().len(), 1);
}

#[test]
fn requests_are_checked_before_any_pixel_is_decoded() {
    let e = engine();
    let msg = |r: pixtral::Result<pixtral::Prepared>| r.unwrap_err().to_string();
    // not an image: named, from the header
    let junk = ImageSource::Encoded { name: "upload.png".into(), bytes: b"not an image".to_vec() };
    assert!(msg(e.prepare(&ask(junk, "hi"))).contains("upload.png: not a PNG, JPEG, WebP or GIF image"));
    let missing = ImageSource::Path(root().join("nope.png"));
    assert!(msg(e.prepare(&ask(missing, "hi"))).contains("nope.png"));
    // an image where only a user's can be
    let mut req = ask(ImageSource::Path(triangle()), "hi");
    req.messages.insert(0, RequestMessage { role: pixtral::Role::Assistant, content: req.messages[0].content.clone() });
    assert!(matches!(e.prepare(&req), Err(Error::Request(m)) if m.contains("Assistant message cannot hold an image")));
    // a budget below one patch
    let mut req = ask(ImageSource::Path(triangle()), "hi");
    req.image_max_side = Some(8);
    assert!(matches!(e.prepare(&req), Err(Error::Request(m)) if m.contains("below the model's patch size")));
    // images without a vision tower
    let text_only = Engine::load(
        root().join("examples/demo/pixtral-demo.gguf"),
        &EngineOptions { vision: false, ..Default::default() },
    )
    .unwrap();
    assert!(matches!(text_only.prepare(&ask(ImageSource::Path(triangle()), "hi")), Err(Error::Request(_))));
    // the context: the image's tokens counted from its header
    let p = e.prepare(&ask(ImageSource::Path(triangle()), "What shape is this?")).unwrap();
    let (gw, gh) = (p.images[0].grid_w, p.images[0].grid_h);
    assert_eq!(p.image_tokens(), (gw + 1) * gh);
    assert!(p.check_fits(p.ids.len()).is_ok());
    let err = p.check_fits(p.ids.len() - 1).unwrap_err().to_string();
    assert!(err.contains(&format!("the prompt has {} tokens ({} for images", p.ids.len(), p.image_tokens())), "{err}");
    // system messages are joined before the last user message, as the v3 template places a system prompt
    let mut req = Request::user(vec![Part::Text("hi".into())]);
    req.messages.insert(0, RequestMessage::system("Be brief."));
    req.messages.insert(0, RequestMessage::system("Be kind."));
    assert_eq!(e.prepare(&req).unwrap().system.as_deref(), Some("Be kind.\n\nBe brief."));
}

#[test]
fn markers_place_images_in_the_text() {
    let img = || ImageSource::Path("a.png".into());
    let kinds = |parts: &[Part]| -> String {
        parts
            .iter()
            .map(|p| if let Part::Text(t) = p { t.clone() } else { "<IMG>".into() })
            .collect::<Vec<_>>()
            .join("|")
    };
    assert_eq!(kinds(&content_with_markers("What is this?", vec![img()]).unwrap()), "<IMG>|What is this?");
    assert_eq!(
        kinds(&content_with_markers("A <image> and B <image>", vec![img(), img()]).unwrap()),
        "A |<IMG>| and B |<IMG>"
    );
    let err = content_with_markers("<image> and <image>", vec![img()]).unwrap_err();
    assert!(matches!(err, Error::Request(m) if m.contains("2 <image> markers but 1 image")));
}

#[test]
fn an_engine_is_shared_between_threads_and_a_session_moves_between_them() {
    fn shared<T: Send + Sync>() {}
    fn sent<T: Send>() {}
    shared::<Engine>();
    sent::<pixtral::Session<'static>>();
    sent::<Conversation>();
    // two threads, one engine: the same greedy answer, the image encoded by whichever came first
    let e = engine();
    let answers: Vec<String> = std::thread::scope(|s| {
        let run = || {
            let mut session = e.session(SessionOptions::default()).unwrap();
            let mut conv = Conversation::new(None);
            let req = ask(ImageSource::Path(triangle()), "What shape is this?");
            e.complete(&mut session, &mut conv, &req, &mut greedy(16)).unwrap().text
        };
        let (a, b) = (s.spawn(run), s.spawn(run));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(answers, ["A triangle.", "A triangle."]);
    assert_eq!(e.image_cache_usage().0, 1);
}

#[test]
fn a_stop_string_is_not_part_of_the_conversation() {
    let e = engine();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let req = ask(ImageSource::Path(triangle()), "What shape is this?");
    let c = e.complete(&mut s, &mut conv, &req, &mut GenerateOptions { stop: vec!["angle".into()], ..greedy(16) });
    assert_eq!(c.unwrap().text, "A tri");
    let saved = conv.to_json(&e.model.tokenizer);
    assert_eq!(saved["messages"][1]["content"][0]["text"], "A tri", "{saved}");
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let e = engine();
    let mut s = e.session(SessionOptions::default()).unwrap();
    let mut conv = Conversation::new(None);
    let req = Request::user(vec![Part::Text("Hello".into())]);
    let mut try_opts =
        |opts: GenerateOptions| e.complete(&mut s, &mut conv, &req, &mut { opts }).unwrap_err().to_string();
    let sampling = |f: fn(&mut SamplerParams)| {
        let mut p = SamplerParams::greedy();
        f(&mut p);
        GenerateOptions { sampling: p, ..greedy(4) }
    };
    assert!(try_opts(sampling(|p| p.temp = f32::NAN)).starts_with("temperature is NaN"));
    assert!(try_opts(sampling(|p| p.top_p = 5.0)).starts_with("top_p is 5"));
    assert!(try_opts(sampling(|p| p.min_p = -1.0)).starts_with("min_p is -1"));
    assert!(try_opts(sampling(|p| p.repeat_penalty = 0.0)).starts_with("repeat_penalty is 0"));
    assert!(try_opts(GenerateOptions { top_logprobs: 21, ..greedy(4) }).starts_with("top_logprobs is 21"));
    // contexts that cannot be: refused, never a panic or an overflow
    for ctx_size in [0, usize::MAX / 2, usize::MAX] {
        let r = e.session(SessionOptions { ctx_size, ..Default::default() });
        assert!(matches!(r, Err(Error::Request(_) | Error::Memory { .. })), "{ctx_size}");
    }
    // a thread count past any use: refused before a thread is made
    let max = pixtral::runtime::engine::max_threads();
    let err = pixtral::runtime::engine::set_threads(max + 1).unwrap_err().to_string();
    assert!(err.contains(&format!("at most {max}")), "{err}");
}

#[test]
fn errors_advise_in_the_front_end_s_words() {
    let names = pixtral::error::SettingNames {
        ctx_size: "--ctx-size",
        image_max_side: "--image-max-side",
        context_shift: Some("--context-shift"),
        kv_f16: "--kv-type f16",
    };
    let long = Error::PromptTooLong { tokens: 68, image_tokens: 56, ctx: 40 };
    assert_eq!(
        long.to_string(),
        "the prompt has 68 tokens (56 for images, which are never cut to fit) but the context holds 40"
    );
    assert_eq!(long.advice(&names).unwrap(), "use a larger --ctx-size, or a smaller --image-max-side");
    let text = Error::PromptTooLong { tokens: 68, image_tokens: 0, ctx: 40 };
    assert_eq!(
        text.advice(&pixtral::error::SettingNames { context_shift: None, ..names }).unwrap(),
        "use a larger --ctx-size"
    );
    let full = Error::ContextFull { prompt: 9, ctx: 8, used: 0 };
    assert_eq!(full.advice(&names).unwrap(), "use a larger --ctx-size or --context-shift");
    assert!(Error::Cancelled.advice(&names).is_none());
}
