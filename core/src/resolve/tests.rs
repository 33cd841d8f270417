//! The resolver's paths: registry, cache, query answered, query timed out, breakers.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::*;

fn n(b: u8) -> NodeId {
    NodeId::from_bytes([b; 32])
}

fn at(ms: u64) -> Instant {
    Instant::from_micros(ms * 1000)
}

fn echo() -> ServiceName {
    ServiceName::new("echo").unwrap()
}

fn resolver() -> Resolver {
    Resolver::new(ResolverConfig::default(), &mut Rng::from_seed([3; 32]))
}

fn reply(id: QueryId, providers: Vec<(NodeId, u32)>) -> Answer {
    Answer {
        id,
        name: echo(),
        providers,
    }
}

fn asked(r: &mut Resolver, now: Instant) -> QueryId {
    match r.resolve(now, &echo(), []) {
        Resolution::Ask(id) => id,
        other => panic!("expected a query, got {other:?}"),
    }
}

#[test]
fn registry_providers_are_used_in_turn_without_asking() {
    let mut r = resolver();
    let picks: Vec<_> = (0..4)
        .map(|_| r.resolve(at(0), &echo(), [n(2), n(1), n(2)]))
        .collect();
    assert_eq!(
        picks,
        [n(1), n(2), n(1), n(2)].map(Resolution::Provider),
        "sorted, deduplicated, round robin"
    );
    assert_eq!(r.poll_query(), None);
    assert_eq!(
        r.resolve_with(at(0), &echo(), [n(1), n(2)], Strategy::Preferred(n(2))),
        Resolution::Provider(n(2))
    );
}

#[test]
fn a_query_answered_resolves_and_fills_the_cache_until_the_ttl() {
    let mut r = resolver();
    let id = asked(&mut r, at(0));
    assert_eq!(
        r.resolve(at(1), &echo(), []),
        Resolution::Ask(id),
        "one query per name"
    );
    assert_eq!(r.poll_query(), Some(Query { id, name: echo() }));
    assert_eq!(r.poll_query(), None);
    assert!(r.handle_answer(at(10), n(9), &reply(id, vec![(n(5), 3)])));
    assert_eq!(r.poll_outcome(), Some((id, Ok(n(5)))));
    assert_eq!(r.poll_outcome(), None);
    assert_eq!(r.poll_timeout(), None, "the query is finished");
    assert!(
        !r.handle_answer(at(11), n(8), &reply(id, vec![(n(6), 3)])),
        "late answers are ignored"
    );
    assert_eq!(
        r.resolve(at(3009), &echo(), []),
        Resolution::Provider(n(5)),
        "cache hit"
    );
    assert!(
        matches!(r.resolve(at(3010), &echo(), []), Resolution::Ask(_)),
        "expired"
    );
}

#[test]
fn a_query_without_answer_times_out_as_not_found_and_is_cached_negatively() {
    let mut r = resolver();
    let id = asked(&mut r, at(0));
    assert_eq!(r.poll_timeout(), Some(at(2000)));
    r.handle_timeout(at(1999));
    assert_eq!(r.poll_outcome(), None);
    r.handle_timeout(at(2000));
    assert_eq!(r.poll_outcome(), Some((id, Err(ResolveError::NotFound))));
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.resolve(at(2001), &echo(), []), Resolution::NotFound);
    assert_eq!(r.resolve(at(31_999), &echo(), []), Resolution::NotFound);
    assert!(matches!(
        r.resolve(at(32_000), &echo(), []),
        Resolution::Ask(_)
    ));
    // The registry still wins over the negative entry.
    let mut r = resolver();
    asked(&mut r, at(0));
    r.handle_timeout(at(2000));
    assert_eq!(
        r.resolve(at(2001), &echo(), [n(4)]),
        Resolution::Provider(n(4))
    );
}

#[test]
fn empty_answers_from_everyone_asked_end_the_query_early() {
    let mut r = resolver();
    let id = asked(&mut r, at(0));
    r.asked(id, [n(7), n(8)]);
    assert!(
        r.handle_answer(at(5), n(9), &reply(id, vec![])),
        "not asked: ignored"
    );
    assert!(r.handle_answer(at(5), n(7), &reply(id, vec![])));
    assert_eq!(r.poll_outcome(), None, "n(8) has not answered");
    assert!(r.handle_answer(at(6), n(8), &reply(id, vec![])));
    assert_eq!(r.poll_outcome(), Some((id, Err(ResolveError::NotFound))));
    assert_eq!(r.resolve(at(7), &echo(), []), Resolution::NotFound);
}

#[test]
fn answers_for_another_name_do_not_match() {
    let mut r = resolver();
    let id = asked(&mut r, at(0));
    let other = Answer {
        id,
        name: ServiceName::new("time").unwrap(),
        providers: vec![(n(5), 30)],
    };
    assert!(!r.handle_answer(at(1), n(9), &other));
    assert_eq!(r.pending(), 1);
}

#[test]
fn open_breakers_make_known_providers_unavailable() {
    let mut r = resolver();
    for _ in 0..3 {
        r.record_failure(at(0), &n(1));
    }
    assert_eq!(r.breakers().state(at(0), &n(1)), BreakerState::Open);
    assert_eq!(r.resolve(at(0), &echo(), [n(1)]), Resolution::Unavailable);
    assert_eq!(
        r.resolve(at(0), &echo(), [n(1), n(2)]),
        Resolution::Provider(n(2))
    );
    let id = asked(&mut r, at(0));
    r.handle_answer(at(1), n(9), &reply(id, vec![(n(1), 30)]));
    assert_eq!(r.poll_outcome(), Some((id, Err(ResolveError::Unavailable))));
    assert_eq!(
        r.resolve(at(2), &echo(), []),
        Resolution::Unavailable,
        "cached, still open"
    );
    // After the cooldown the half-open trial goes, and a success closes the breaker.
    assert_eq!(
        r.resolve(at(10_000), &echo(), []),
        Resolution::Provider(n(1))
    );
    r.record_success(&n(1));
    assert_eq!(
        r.resolve(at(10_001), &echo(), []),
        Resolution::Provider(n(1))
    );
}

#[test]
fn outstanding_queries_are_bounded() {
    let mut r = Resolver::new(
        ResolverConfig {
            max_queries: 2,
            ..ResolverConfig::default()
        },
        &mut Rng::from_seed([3; 32]),
    );
    let names: Vec<ServiceName> = ["a", "b", "c"].map(|s| ServiceName::new(s).unwrap()).into();
    assert!(matches!(
        r.resolve(at(0), &names[0], []),
        Resolution::Ask(_)
    ));
    assert!(matches!(
        r.resolve(at(0), &names[1], []),
        Resolution::Ask(_)
    ));
    assert_eq!(r.resolve(at(0), &names[2], []), Resolution::Busy);
    r.handle_timeout(at(2000));
    assert_eq!(
        r.resolve(at(2000), &names[2], []),
        Resolution::Busy,
        "outcomes not polled yet"
    );
    r.poll_outcome();
    assert!(matches!(
        r.resolve(at(2000), &names[2], []),
        Resolution::Ask(_)
    ));
}

#[test]
fn answers_name_registry_providers_or_else_cached_ones() {
    let mut r = resolver();
    let query = Query {
        id: QueryId(1),
        name: echo(),
    };
    assert_eq!(
        r.answer(at(0), &query, [n(2), n(1)]),
        reply(QueryId(1), vec![(n(1), 30), (n(2), 30)])
    );
    assert_eq!(r.answer(at(0), &query, []), reply(QueryId(1), vec![]));
    r.cache_mut()
        .insert_positive(at(0), &echo(), n(3), Duration::from_secs(10));
    assert_eq!(
        r.answer(at(4_500), &query, []),
        reply(QueryId(1), vec![(n(3), 5)])
    );
    assert_eq!(
        r.answer(at(9_500), &query, []),
        reply(QueryId(1), vec![]),
        "under a second left"
    );
}

#[test]
fn query_ids_start_at_a_random_point() {
    let a = asked(
        &mut Resolver::new(ResolverConfig::default(), &mut Rng::from_seed([1; 32])),
        at(0),
    );
    let b = asked(
        &mut Resolver::new(ResolverConfig::default(), &mut Rng::from_seed([2; 32])),
        at(0),
    );
    assert_ne!(a, b);
}

#[test]
fn queries_never_polled_do_not_pile_up() {
    let mut r = Resolver::new(
        ResolverConfig {
            max_queries: 2,
            ..ResolverConfig::default()
        },
        &mut Rng::from_seed([3; 32]),
    );
    for i in 0..10u64 {
        let now = at(i * 2000);
        asked(&mut r, now);
        r.handle_timeout(now + Duration::from_secs(2));
        assert!(r.poll_outcome().is_some());
        r.cache_mut().expire(at(u64::MAX / 1000));
    }
    assert!(r.to_send.len() <= 2);
    let live = asked(&mut r, at(100_000));
    assert_eq!(
        r.poll_query().map(|q| q.id),
        Some(live),
        "ended queries are skipped"
    );
    assert_eq!(r.poll_query(), None);
}
