//! Service resolution: dual cache, provider selection, circuit breaker (work in progress).
