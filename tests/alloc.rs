//! "No allocation per decoded token": count heap allocations while generating 8 and 40 tokens in fresh
//! sessions; the 32 extra decode steps may only add the amortised growth of the output vectors.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{fixtures, TempDir};
use pixtral::quant::GgmlType;
use pixtral::{Model, Sampler, SamplerParams, Session, SessionOptions};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn decoding_does_not_allocate_per_token() {
    let dir = TempDir::new("alloc");
    let out = dir.join("m.gguf");
    let opts = pixtral::convert::Options {
        src: fixtures().join("tiny/hf"),
        out: out.clone(),
        outtype: GgmlType::Q8_0,
        vision_type: GgmlType::F16,
        force: true,
        progress: false,
        vision_act: None,
        mix: None,
    };
    pixtral::convert::convert(&opts).unwrap();
    let model = Model::load(&out).unwrap();
    let prompt = {
        let mut v = vec![model.tokenizer.bos];
        v.extend(model.tokenizer.encode("The cat sat on the mat."));
        v
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let count = |n: usize| {
        pool.install(|| {
            let mut s = Session::new(&model, SessionOptions::default());
            // temperature sampling so EOS does not end it early; repetition penalty exercises its buffer
            let mut sampler = Sampler::new(SamplerParams {
                seed: 5,
                temp: 1.5,
                top_k: 0,
                min_p: 0.0,
                repeat_penalty: 1.1,
                ..Default::default()
            });
            let before = ALLOCS.load(Ordering::SeqCst);
            let g = s.generate(&prompt, &mut sampler, n, None, |_| true).unwrap();
            (ALLOCS.load(Ordering::SeqCst) - before, g.tokens.len())
        })
    };
    count(8); // warm the thread pool and thread-local scratch
              // the fewest of three runs: the pool's work-stealing deques sometimes grow or shrink a buffer, noise that
              // depends on which thread stole what, not on the number of tokens
    let least = |n: usize| (0..3).map(|_| count(n)).min().unwrap();
    let (a8, n8) = least(8);
    let (a40, n40) = least(40);
    assert_eq!((n8, n40), (8, 40), "generation must not stop early for this test");
    // buffers are sized at session start: 32 more decode steps allocate nothing (slack of 2 for a generated
    // piece longer than its buffer)
    assert!(a40 <= a8 + 2, "{a8} allocations for 8 tokens, {a40} for 40: 32 decode steps allocate");
}
