//! Instruction-set tiers, chosen once at run time: the best the CPU has, or `PIXTRAL_ISA=scalar|avx2|avx512|neon`
//! (a tier the CPU lacks is refused with a warning and the detected one is used).

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().find(|i| i.name().eq_ignore_ascii_case(s))
    }

    /// Whether this CPU can run the tier.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            _ => false,
        }
    }

    /// Every tier this CPU runs and this build has kernels for, best last.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter(|i| i.supported() && crate::kernels::has(*i))
            .collect()
    }

    pub fn detect() -> Isa {
        *Isa::available().last().expect("scalar is always available")
    }
}

/// The tier in use, decided on first call.
pub fn selected() -> Isa {
    static SEL: OnceLock<Isa> = OnceLock::new();
    *SEL.get_or_init(|| match std::env::var("PIXTRAL_ISA") {
        Ok(s) => match Isa::from_name(&s) {
            Some(i) if Isa::available().contains(&i) => i,
            _ => {
                let d = Isa::detect();
                eprintln!("warning: PIXTRAL_ISA={s} is not available on this CPU/build; using {}", d.name());
                d
            }
        },
        Err(_) => Isa::detect(),
    })
}
