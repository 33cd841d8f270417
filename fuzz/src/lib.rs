//! Fuzz harnesses live in `tests/`; run them as tests with `cargo test -p weft-mesh-fuzz`
//! or as fuzzers with `cargo bolero test -p weft-mesh-fuzz <harness>`.
