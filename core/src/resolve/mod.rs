//! Service resolution (DESIGN.md §4 "Service resolution"): find a node that provides a
//! service, from the registry first and by asking the cluster as a fallback, with a dual
//! cache, per-provider circuit breakers and provider selection.
//!
//! The [`Resolver`] is sans-IO: it hands out queries to send ([`Resolver::poll_query`]),
//! takes answers ([`Resolver::handle_answer`]) and time ([`Resolver::handle_timeout`]),
//! and reports the outcome of each query ([`Resolver::poll_outcome`]).

mod breaker;
mod cache;
mod select;
mod wire;

#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

pub use breaker::{BreakerConfig, BreakerState, Breakers};
pub use cache::{Lookup, ResolveCache};
pub use select::{Selector, Strategy};
pub use wire::{Answer, Query, QueryId, ResolveMessage, MAX_ANSWER_PROVIDERS};

use crate::registry::ServiceName;
use crate::{Instant, NodeId, Rng};

/// Settings of a [`Resolver`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResolverConfig {
    /// How long "nobody provides it" is cached.
    pub negative_ttl: Duration,
    /// A query with no usable answer in this time resolves to not found.
    pub query_timeout: Duration,
    /// Most queries outstanding (including outcomes not yet polled).
    pub max_queries: usize,
    /// Most names in the cache and the selector.
    pub max_names: usize,
    /// Most providers cached per name.
    pub max_providers: usize,
    /// Most members one query is recorded as sent to ([`Resolver::asked`]).
    pub max_fanout: usize,
    /// The time to live this node gives the providers it names in its answers.
    pub answer_ttl: Duration,
    /// The providers' circuit breakers.
    pub breaker: BreakerConfig,
}

impl Default for ResolverConfig {
    /// Negative entries 30 s, queries 2 s, 256 queries, 4096 names of 32 providers,
    /// fan-out 16, answers valid 30 s, default breakers.
    fn default() -> Self {
        ResolverConfig {
            negative_ttl: Duration::from_secs(30),
            query_timeout: Duration::from_secs(2),
            max_queries: 256,
            max_names: 4096,
            max_providers: MAX_ANSWER_PROVIDERS,
            max_fanout: 16,
            answer_ttl: Duration::from_secs(30),
            breaker: BreakerConfig::default(),
        }
    }
}

/// The immediate result of [`Resolver::resolve`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Resolution {
    /// Call this provider (found in the registry or the cache).
    Provider(NodeId),
    /// The cluster recently said nobody provides it (negative cache).
    NotFound,
    /// Providers are known but every one's breaker is open.
    Unavailable,
    /// Ask the cluster: the query is (or already was) queued for [`Resolver::poll_query`];
    /// its outcome comes from [`Resolver::poll_outcome`].
    Ask(QueryId),
    /// Too many queries are outstanding; try again later.
    Busy,
}

/// Why a query did not find a provider.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// Nobody answered with a provider in time, or everyone asked said none (the
    /// name is now in the negative cache).
    NotFound,
    /// Providers were named but every one's breaker is open.
    Unavailable,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolveError::NotFound => "no provider found",
            ResolveError::Unavailable => "every provider's circuit breaker is open",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ResolveError {}

/// A query waiting for answers.
#[derive(Clone, Debug)]
struct Pending {
    name: ServiceName,
    strategy: Strategy,
    deadline: Instant,
    /// Members asked that have not answered yet (see [`Resolver::asked`]).
    waiting_on: BTreeSet<NodeId>,
}

/// Resolves service names to provider nodes (see the [module docs](self)).
///
/// ```
/// use weft_mesh::resolve::{Resolver, ResolverConfig, Resolution, ResolveMessage};
/// use weft_mesh::registry::ServiceName;
/// use weft_mesh::{Instant, NodeId, Rng};
///
/// let mut rng = Rng::from_seed([0; 32]);
/// let mut resolver = Resolver::new(ResolverConfig::default(), &mut rng);
/// let elsewhere = Resolver::new(ResolverConfig::default(), &mut rng);
/// let echo = ServiceName::new("echo").unwrap();
/// let (now, provider, member) = (Instant::ZERO, NodeId::from_bytes([7; 32]), NodeId::from_bytes([9; 32]));
///
/// // Not in our registry: ask the cluster.
/// let Resolution::Ask(id) = resolver.resolve(now, &echo, []) else { panic!() };
/// let query = resolver.poll_query().unwrap();
/// let bytes = ResolveMessage::Query(query).encode();
///
/// // A member whose registry lists a provider answers.
/// let ResolveMessage::Query(query) = ResolveMessage::decode(&bytes).unwrap() else { panic!() };
/// let reply = ResolveMessage::Answer(elsewhere.answer(now, &query, [provider])).encode();
///
/// let ResolveMessage::Answer(reply) = ResolveMessage::decode(&reply).unwrap() else { panic!() };
/// resolver.handle_answer(now, member, &reply);
/// assert_eq!(resolver.poll_outcome(), Some((id, Ok(provider))));
/// // Now cached.
/// assert_eq!(resolver.resolve(now, &echo, []), Resolution::Provider(provider));
/// ```
#[derive(Clone, Debug)]
pub struct Resolver {
    config: ResolverConfig,
    cache: ResolveCache,
    breakers: Breakers,
    selector: Selector,
    queries: BTreeMap<QueryId, Pending>,
    by_name: BTreeMap<ServiceName, QueryId>,
    deadlines: BTreeSet<(Instant, QueryId)>,
    to_send: VecDeque<QueryId>,
    outcomes: VecDeque<(QueryId, Result<NodeId, ResolveError>)>,
    next_id: u64,
}

impl Resolver {
    /// A resolver; query ids start at a random point drawn from `rng`, so that late
    /// answers to a previous run's queries do not match.
    pub fn new(config: ResolverConfig, rng: &mut Rng) -> Self {
        Resolver {
            cache: ResolveCache::new(config.max_names, config.max_providers, config.negative_ttl),
            breakers: Breakers::new(config.breaker.clone()),
            selector: Selector::new(config.max_names),
            queries: BTreeMap::new(),
            by_name: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            to_send: VecDeque::new(),
            outcomes: VecDeque::new(),
            next_id: rng.next_u64(),
            config,
        }
    }

    /// [`Resolver::resolve_with`] round robin.
    pub fn resolve(
        &mut self,
        now: Instant,
        name: &ServiceName,
        from_registry: impl IntoIterator<Item = NodeId>,
    ) -> Resolution {
        self.resolve_with(now, name, from_registry, Strategy::RoundRobin)
    }

    /// Resolve `name`: a provider from the registry (`from_registry`: the providers our
    /// registry lists) or else the cache, chosen by `strategy` among those whose breaker
    /// lets calls through; not found if negatively cached; otherwise a query.
    pub fn resolve_with(
        &mut self,
        now: Instant,
        name: &ServiceName,
        from_registry: impl IntoIterator<Item = NodeId>,
        strategy: Strategy,
    ) -> Resolution {
        let registry = sorted(from_registry);
        let providers = if registry.is_empty() {
            match self.cache.lookup(now, name) {
                Lookup::Hit(cached) => cached,
                Lookup::Negative => return Resolution::NotFound,
                Lookup::Miss => return self.ask(now, name, strategy),
            }
        } else {
            registry
        };
        match self.pick(now, name, &providers, strategy) {
            Some(node) => Resolution::Provider(node),
            None => Resolution::Unavailable,
        }
    }

    fn pick(
        &mut self,
        now: Instant,
        name: &ServiceName,
        providers: &[NodeId],
        strategy: Strategy,
    ) -> Option<NodeId> {
        self.selector
            .select(now, name, providers, strategy, &mut self.breakers)
    }

    fn ask(&mut self, now: Instant, name: &ServiceName, strategy: Strategy) -> Resolution {
        if let Some(id) = self.by_name.get(name) {
            return Resolution::Ask(*id);
        }
        if self.queries.len() + self.outcomes.len() >= self.config.max_queries {
            return Resolution::Busy;
        }
        let id = QueryId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = now + self.config.query_timeout;
        self.queries.insert(
            id,
            Pending {
                name: name.clone(),
                strategy,
                deadline,
                waiting_on: BTreeSet::new(),
            },
        );
        self.by_name.insert(name.clone(), id);
        self.deadlines.insert((deadline, id));
        if self.to_send.len() >= self.config.max_queries {
            // Queries that ended before being polled: forget them (bounds the queue).
            let queries = &self.queries;
            self.to_send.retain(|id| queries.contains_key(id));
        }
        self.to_send.push_back(id);
        Resolution::Ask(id)
    }

    /// The next query to send to some members (the owner picks them).
    pub fn poll_query(&mut self) -> Option<Query> {
        while let Some(id) = self.to_send.pop_front() {
            if let Some(p) = self.queries.get(&id) {
                return Some(Query {
                    id,
                    name: p.name.clone(),
                });
            }
        }
        None
    }

    /// Optional: the query went to these members. Once every one of them has answered
    /// without a provider, the query ends as not found without waiting for the timeout.
    pub fn asked(&mut self, id: QueryId, members: impl IntoIterator<Item = NodeId>) {
        let max = self.config.max_fanout;
        if let Some(p) = self.queries.get_mut(&id) {
            for m in members {
                if p.waiting_on.len() >= max {
                    break;
                }
                p.waiting_on.insert(m);
            }
        }
    }

    /// An answer from member `from`. Its providers are cached; if one is usable the query
    /// resolves to it. An empty answer counts only if `from` was [`asked`](Self::asked).
    /// Answers to unknown or finished queries (or naming another service) are ignored;
    /// returns whether this one matched a pending query.
    pub fn handle_answer(&mut self, now: Instant, from: NodeId, answer: &Answer) -> bool {
        let Some(p) = self.queries.get_mut(&answer.id) else {
            return false;
        };
        if p.name != answer.name {
            return false;
        }
        let (name, strategy) = (p.name.clone(), p.strategy);
        if answer.providers.is_empty() {
            if p.waiting_on.remove(&from) && p.waiting_on.is_empty() {
                self.finish(answer.id, Err(ResolveError::NotFound));
                self.cache.insert_negative(now, &name);
            }
            return true;
        }
        let named = answer.providers.iter().take(MAX_ANSWER_PROVIDERS);
        for (node, ttl) in named.clone() {
            self.cache
                .insert_positive(now, &name, *node, Duration::from_secs((*ttl).into()));
        }
        let providers = sorted(named.map(|(node, _)| *node));
        let outcome = self
            .pick(now, &name, &providers, strategy)
            .ok_or(ResolveError::Unavailable);
        self.finish(answer.id, outcome);
        true
    }

    /// Time out the queries whose deadline passed (not found, negatively cached) and
    /// drop expired cache entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if now < deadline {
                break;
            }
            if let Some(name) = self.queries.get(&id).map(|p| p.name.clone()) {
                self.finish(id, Err(ResolveError::NotFound));
                self.cache.insert_negative(now, &name);
            } else {
                self.deadlines.remove(&(deadline, id));
            }
        }
        self.cache.expire(now);
    }

    /// The earliest query deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// The next finished query: a provider, or why none.
    pub fn poll_outcome(&mut self) -> Option<(QueryId, Result<NodeId, ResolveError>)> {
        self.outcomes.pop_front()
    }

    fn finish(&mut self, id: QueryId, outcome: Result<NodeId, ResolveError>) {
        if let Some(p) = self.queries.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
            self.by_name.remove(&p.name);
            self.outcomes.push_back((id, outcome));
        }
    }

    /// Answer a peer's query: the providers our registry lists (`from_registry`) valid
    /// for [`ResolverConfig::answer_ttl`], or else those in our cache with the time they
    /// have left.
    pub fn answer(
        &self,
        now: Instant,
        query: &Query,
        from_registry: impl IntoIterator<Item = NodeId>,
    ) -> Answer {
        let ttl = secs(self.config.answer_ttl);
        let mut providers: Vec<(NodeId, u32)> = sorted(from_registry)
            .into_iter()
            .map(|n| (n, ttl))
            .collect();
        if providers.is_empty() {
            providers = self
                .cache
                .providers(now, &query.name)
                .into_iter()
                .map(|(n, left)| (n, secs(left)))
                .filter(|(_, ttl)| *ttl > 0)
                .collect();
        }
        providers.truncate(MAX_ANSWER_PROVIDERS);
        Answer {
            id: query.id,
            name: query.name.clone(),
            providers,
        }
    }

    /// A call to `node` succeeded (closes its breaker).
    pub fn record_success(&mut self, node: &NodeId) {
        self.breakers.record_success(node);
    }

    /// A call to `node` failed (counts towards opening its breaker).
    pub fn record_failure(&mut self, now: Instant, node: &NodeId) {
        self.breakers.record_failure(now, node);
    }

    /// The circuit breakers.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// The cache.
    pub fn cache(&self) -> &ResolveCache {
        &self.cache
    }

    /// The cache, to add or remove what was learned elsewhere.
    pub fn cache_mut(&mut self) -> &mut ResolveCache {
        &mut self.cache
    }

    /// Queries outstanding (sent or not, without those whose outcome waits to be polled).
    pub fn pending(&self) -> usize {
        self.queries.len()
    }
}

fn sorted(nodes: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = nodes.into_iter().collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
