//! Seeds for tests: reproduce a failing run with `WEFT_SIM_SEED=<seed>`.

use std::panic::{self, AssertUnwindSafe};

/// The environment variable that overrides a test's seed.
pub const SEED_VAR: &str = "WEFT_SIM_SEED";

/// `WEFT_SIM_SEED` if set (decimal, or hex with `0x`), else `default`.
///
/// # Panics
/// If the variable is set but not a number.
pub fn seed_or(default: u64) -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{SEED_VAR}={s:?} is not a u64"))
        }
        Err(_) => default,
    }
}

/// Run the test body `f` with its seed (`WEFT_SIM_SEED` or `default`). The seed is
/// printed first; if `f` panics, the seed and the command to rerun it are printed and
/// the panic continues.
pub fn with_seed<T>(test: &str, default: u64, f: impl FnOnce(u64) -> T) -> T {
    let seed = seed_or(default);
    eprintln!("[sim] {test}: seed = {seed}");
    match panic::catch_unwind(AssertUnwindSafe(|| f(seed))) {
        Ok(t) => t,
        Err(payload) => {
            eprintln!(
                "[sim] {test} FAILED with seed = {seed}; rerun with {SEED_VAR}={seed} \
                 cargo test -p weft-mesh-tests --test sim -- --include-ignored {test}"
            );
            panic::resume_unwind(payload)
        }
    }
}
