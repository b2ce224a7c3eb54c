//! Token sampling: repetition penalty → top-k → temperature softmax → top-p → min-p → draw.
//! `temp == 0` is greedy (the first maximal logit). A seeded splitmix64 makes draws reproducible: the same seed,
//! logits and history give the same token. Non-finite logits are an error, never a sampled token.

#[derive(Debug, Clone)]
pub struct SamplerParams {
    pub temp: f32,
    /// 0 = off
    pub top_k: usize,
    /// 1.0 = off
    pub top_p: f32,
    /// 0.0 = off
    pub min_p: f32,
    /// 1.0 = off; llama.cpp's rule: positive logits divided, negative multiplied
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
    /// ids never drawn (`--ignore-eos` bans EOS)
    pub banned: Vec<u32>,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            banned: Vec::new(),
        }
    }
}

impl SamplerParams {
    pub fn greedy() -> Self {
        SamplerParams { temp: 0.0, ..Default::default() }
    }
}

pub struct Sampler {
    pub params: SamplerParams,
    state: u64,
    cand: Vec<(f32, u32)>,
    /// ids already penalised this step (vocab-sized, reused)
    seen: Vec<bool>,
}

/// Why a token could not be drawn.
#[derive(Debug, PartialEq)]
pub struct NonFiniteLogit {
    pub index: usize,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        Sampler { state: params.seed, params, cand: Vec::new(), seen: Vec::new() }
    }

    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, NonFiniteLogit> {
        if let Some(index) = logits.iter().position(|x| !x.is_finite()) {
            return Err(NonFiniteLogit { index });
        }
        let p = &self.params;
        self.cand.clear();
        self.cand.extend(logits.iter().enumerate().map(|(i, &l)| (l, i as u32)));
        if p.repeat_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
            self.seen.resize(logits.len(), false);
            for &t in recent {
                if let (Some(c), Some(seen)) = (self.cand.get_mut(t as usize), self.seen.get_mut(t as usize)) {
                    if !*seen {
                        *seen = true;
                        c.0 = if c.0 > 0.0 { c.0 / p.repeat_penalty } else { c.0 * p.repeat_penalty };
                    }
                }
            }
            for &t in recent {
                if let Some(seen) = self.seen.get_mut(t as usize) {
                    *seen = false;
                }
            }
        }
        for &b in &p.banned {
            if let Some(c) = self.cand.get_mut(b as usize) {
                c.0 = f32::NEG_INFINITY;
            }
        }
        if p.temp <= 0.0 {
            // first maximum wins ties
            let best = self.cand.iter().fold((f32::NEG_INFINITY, 0u32), |b, c| if c.0 > b.0 { *c } else { b });
            return Ok(best.1);
        }
        // sort descending by logit (stable by id for ties)
        // a total order (ties broken by id): the unstable sort is deterministic and does not allocate
        self.cand.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).expect("finite").then(a.1.cmp(&b.1)));
        if p.top_k > 0 && p.top_k < self.cand.len() {
            self.cand.truncate(p.top_k);
        }
        let max = self.cand[0].0;
        let mut sum = 0f32;
        for c in self.cand.iter_mut() {
            c.0 = ((c.0 - max) / p.temp).exp();
            sum += c.0;
        }
        for c in self.cand.iter_mut() {
            c.0 /= sum;
        }
        if p.top_p < 1.0 {
            let mut acc = 0f32;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                acc += c.0;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = self.cand[0].0 * p.min_p;
            let keep = self.cand.iter().take_while(|c| c.0 >= floor).count().max(1);
            self.cand.truncate(keep);
        }
        let total: f32 = self.cand.iter().map(|c| c.0).sum();
        let mut r = self.uniform() * total;
        for c in &self.cand {
            r -= c.0;
            if r <= 0.0 {
                return Ok(c.1);
            }
        }
        Ok(self.cand.last().expect("at least one candidate").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplerParams::greedy());
        assert_eq!(s.sample(&[0.0, 3.0, 3.0, -1.0], &[]), Ok(1));
    }

    #[test]
    fn non_finite_logits_are_errors() {
        let mut s = Sampler::new(SamplerParams::default());
        assert_eq!(s.sample(&[0.0, f32::NAN], &[]), Err(NonFiniteLogit { index: 1 }));
        assert_eq!(s.sample(&[f32::INFINITY, 0.0], &[]), Err(NonFiniteLogit { index: 0 }));
    }

    #[test]
    fn banned_ids_are_never_drawn() {
        // id 2 dominates; banned (--ignore-eos), neither greedy nor a hot sampler ever picks it
        let logits = [0.0, 1.0, 50.0, 0.5];
        let mut g = Sampler::new(SamplerParams { banned: vec![2], ..SamplerParams::greedy() });
        assert_eq!(g.sample(&logits, &[]), Ok(1));
        let p = SamplerParams { temp: 5.0, top_k: 0, top_p: 1.0, min_p: 0.0, banned: vec![2], ..Default::default() };
        let mut s = Sampler::new(p);
        assert!((0..500).all(|_| s.sample(&logits, &[]) != Ok(2)));
    }

    #[test]
    fn same_seed_same_draws_and_filters_apply() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let draw = |seed| {
            let mut s =
                Sampler::new(SamplerParams { seed, temp: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() });
            (0..50).map(|_| s.sample(&logits, &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top-k 1 is greedy whatever the seed
        let mut s = Sampler::new(SamplerParams { top_k: 1, temp: 5.0, seed: 3, ..Default::default() });
        let argmax = logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b }).0;
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), argmax as u32);
        }
        // min-p 1.0 keeps only the top token too
        let mut s = Sampler::new(SamplerParams { top_k: 0, min_p: 1.0, temp: 1.0, seed: 5, ..Default::default() });
        assert_eq!(s.sample(&logits, &[]).unwrap(), argmax as u32);
        // a huge repetition penalty on the argmax moves greedy elsewhere
        let mut s = Sampler::new(SamplerParams { temp: 0.0, repeat_penalty: 1e9, ..Default::default() });
        assert_ne!(s.sample(&logits, &[argmax as u32]).unwrap(), argmax as u32);
    }

    #[test]
    fn draws_follow_the_distribution() {
        // two tokens with p = 0.8 / 0.2 at temp 1: counts over 20000 draws within 2%
        let logits = [0.8f32.ln(), 0.2f32.ln()];
        let mut s =
            Sampler::new(SamplerParams { temp: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 11, ..Default::default() });
        let n = 20000;
        let zeros = (0..n).filter(|_| s.sample(&logits, &[]).unwrap() == 0).count();
        let frac = zeros as f64 / n as f64;
        assert!((frac - 0.8).abs() < 0.02, "{frac}");
    }
}
