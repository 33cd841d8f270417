//! Distance-vector routes to nodes that are not neighbours (PROTOCOL.md §13.2).
//!
//! Every neighbour periodically advertises its whole table (destination, distance); a
//! new advertisement replaces the old one, so a route disappears as soon as the
//! neighbour stops advertising it or the link goes down. Split horizon: a node never
//! advertises a route back to the neighbour it goes through. Distances stop at
//! [`UNREACHABLE`], which bounds counting to infinity; envelopes themselves stop at
//! [`super::MAX_HOPS`] links.
//!
//! A neighbour whose link is degraded (nothing received for a while, or slow round
//! trips: [`crate::link::Link::is_degraded`]) is a last resort as a *relay*: a route
//! through it to another node is used only when no other neighbour offers one, and is
//! not advertised, so the rest of the mesh stops relaying through the link within one
//! triggered update. The neighbour itself stays reachable: its own link counts as
//! [`DEGRADED_DISTANCE`] links, advertised as such, so a detour through a neighbour
//! whose link to it flows wins, and when every link to it is degraded (it is the slow
//! one) each of its neighbours keeps its own link. (Demoting the direct route below
//! every detour instead makes two such neighbours take turns preferring each other's
//! offer, an endless storm of triggered updates.)

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::NodeId;

/// Distances at or beyond this are not routes.
pub const UNREACHABLE: u8 = 16;

/// The distance of a neighbour over a degraded link.
pub const DEGRADED_DISTANCE: u8 = 3;

/// The best known way to a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Route {
    /// The neighbour to hand envelopes to.
    pub next_hop: NodeId,
    /// Links to the destination (1 = a neighbour; a degraded link counts as
    /// [`DEGRADED_DISTANCE`]).
    pub hops: u8,
}

/// The routing table of one node.
pub(crate) struct Routes {
    me: NodeId,
    max_routes: usize,
    /// What each neighbour advertised last: destination → its distance.
    adverts: BTreeMap<NodeId, BTreeMap<NodeId, u8>>,
    /// Neighbours whose links are degraded.
    degraded: BTreeSet<NodeId>,
    best: BTreeMap<NodeId, Route>,
    /// The table changed since it was last advertised.
    pub dirty: bool,
}

impl Routes {
    pub(crate) fn new(me: NodeId, max_routes: usize) -> Self {
        Routes {
            me,
            max_routes,
            adverts: BTreeMap::new(),
            degraded: BTreeSet::new(),
            best: BTreeMap::new(),
            dirty: false,
        }
    }

    pub(crate) fn neighbour_up(&mut self, n: NodeId) {
        self.adverts.entry(n).or_default();
        let _ = self.recompute();
    }

    pub(crate) fn neighbour_down(&mut self, n: &NodeId) {
        self.degraded.remove(n);
        if self.adverts.remove(n).is_some() {
            let _ = self.recompute();
        }
    }

    /// Mark neighbour `n`'s link degraded or flowing again. Returns whether any best
    /// route changed.
    pub(crate) fn set_degraded(&mut self, n: NodeId, degraded: bool) -> bool {
        let changed = if degraded {
            self.adverts.contains_key(&n) && self.degraded.insert(n)
        } else {
            self.degraded.remove(&n)
        };
        // Routes through `n` stop (or start) being advertised even when the best
        // choice stays the same.
        self.dirty |= changed;
        changed && self.recompute()
    }

    /// Whether `n`'s link is degraded.
    pub(crate) fn is_degraded(&self, n: &NodeId) -> bool {
        self.degraded.contains(n)
    }

    /// Replace `n`'s advertisement (ignored unless `n` is a neighbour). At most
    /// `max_routes` entries are kept, the nearest first. Returns whether any best
    /// route changed.
    pub(crate) fn advertised(&mut self, n: NodeId, entries: &[(NodeId, u8)]) -> bool {
        let me = self.me;
        let Some(table) = self.adverts.get_mut(&n) else {
            return false;
        };
        table.clear();
        let mut sorted: Vec<(NodeId, u8)> = entries
            .iter()
            .copied()
            .filter(|(d, h)| *d != me && *d != n && *h < UNREACHABLE)
            .collect();
        sorted.sort_by_key(|(d, h)| (*h, *d));
        for (d, h) in sorted.into_iter().take(self.max_routes) {
            table.entry(d).or_insert(h);
        }
        self.recompute()
    }

    /// Rebuild the best routes; true if they changed. Ranked by (relayed through a
    /// degraded link, distance, next hop).
    fn recompute(&mut self) -> bool {
        let mut best: BTreeMap<NodeId, Route> = BTreeMap::new();
        let degraded = &self.degraded;
        let rank = |dest: &NodeId, r: &Route| {
            let relayed = r.next_hop != *dest && degraded.contains(&r.next_hop);
            (relayed, r.hops, r.next_hop)
        };
        let mut offer = |dest: NodeId, route: Route| {
            let better = best
                .get(&dest)
                .is_none_or(|b| rank(&dest, &route) < rank(&dest, b));
            if better {
                best.insert(dest, route);
            }
        };
        for (n, table) in &self.adverts {
            let hops = if degraded.contains(n) {
                DEGRADED_DISTANCE
            } else {
                1
            };
            offer(*n, Route { next_hop: *n, hops });
            for (d, h) in table {
                if h + 1 < UNREACHABLE {
                    offer(
                        *d,
                        Route {
                            next_hop: *n,
                            hops: h + 1,
                        },
                    );
                }
            }
        }
        if best.len() > self.max_routes {
            let mut all: Vec<(NodeId, Route)> = best.into_iter().collect();
            all.sort_by_key(|(d, r)| (rank(d, r), *d));
            all.truncate(self.max_routes);
            best = all.into_iter().collect();
        }
        if best == self.best {
            return false;
        }
        self.best = best;
        self.dirty = true;
        true
    }

    /// The route to `dest`, if any.
    pub(crate) fn get(&self, dest: &NodeId) -> Option<Route> {
        self.best.get(dest).copied()
    }

    /// Every route, by destination.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, Route)> + '_ {
        self.best.iter().map(|(d, r)| (*d, *r))
    }

    /// What to advertise to neighbour `to` (split horizon: nothing that goes through
    /// it; nothing through a degraded link but the route to its neighbour).
    pub(crate) fn advert_for(&self, to: &NodeId) -> Vec<(NodeId, u8)> {
        self.best
            .iter()
            .filter(|(d, r)| {
                r.next_hop != *to
                    && *d != to
                    && r.hops + 1 < UNREACHABLE
                    && (r.next_hop == **d || !self.degraded.contains(&r.next_hop))
            })
            .map(|(d, r)| (*d, r.hops))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn neighbours_are_one_hop_and_adverts_add_one() {
        let mut r = Routes::new(n(0), 100);
        r.neighbour_up(n(1));
        r.advertised(n(1), &[(n(2), 1), (n(3), 2), (n(0), 1)]);
        assert_eq!(r.get(&n(1)).unwrap().hops, 1);
        assert_eq!(
            r.get(&n(2)).unwrap(),
            Route {
                next_hop: n(1),
                hops: 2
            }
        );
        assert_eq!(r.get(&n(3)).unwrap().hops, 3);
        assert!(r.get(&n(0)).is_none(), "never a route to ourselves");
        assert!(r.dirty);
    }

    #[test]
    fn the_shorter_route_wins_and_ties_go_to_the_lower_id() {
        let mut r = Routes::new(n(0), 100);
        r.neighbour_up(n(5));
        r.neighbour_up(n(4));
        r.advertised(n(5), &[(n(9), 1)]);
        r.advertised(n(4), &[(n(9), 3)]);
        assert_eq!(r.get(&n(9)).unwrap().next_hop, n(5));
        r.advertised(n(4), &[(n(9), 1)]);
        assert_eq!(r.get(&n(9)).unwrap().next_hop, n(4));
        r.neighbour_down(&n(4));
        assert_eq!(
            r.get(&n(9)).unwrap(),
            Route {
                next_hop: n(5),
                hops: 2
            }
        );
    }

    #[test]
    fn split_horizon_and_withdrawal() {
        let mut r = Routes::new(n(0), 100);
        r.neighbour_up(n(1));
        r.neighbour_up(n(2));
        r.advertised(n(1), &[(n(3), 1)]);
        let to1 = r.advert_for(&n(1));
        assert!(to1.iter().all(|(d, _)| *d != n(3) && *d != n(1)));
        assert!(r.advert_for(&n(2)).contains(&(n(3), 2)));
        r.advertised(n(1), &[]);
        assert!(r.get(&n(3)).is_none(), "a new advert replaces the old one");
    }

    #[test]
    fn a_degraded_neighbour_is_a_last_resort_and_not_a_transit() {
        let mut r = Routes::new(n(0), 100);
        r.neighbour_up(n(1));
        r.neighbour_up(n(2));
        r.advertised(n(1), &[(n(3), 1), (n(4), 1)]);
        r.advertised(n(2), &[(n(3), 3), (n(1), 1)]);
        r.dirty = false;
        assert!(r.set_degraded(n(1), true));
        assert!(r.dirty && r.is_degraded(&n(1)));
        // Around the degraded link, even when longer; to n1 itself through n2, whose
        // link to it flows.
        assert_eq!(r.get(&n(3)).unwrap().next_hop, n(2));
        assert_eq!(r.get(&n(3)).unwrap().hops, 4);
        assert_eq!(
            r.get(&n(1)).unwrap(),
            Route {
                next_hop: n(2),
                hops: 2
            }
        );
        // n2's link to n1 is degraded too (n1 is the slow one): our own link, which we
        // advertise at its degraded distance, so that n2 keeps its own as well.
        r.advertised(n(2), &[(n(3), 3), (n(1), DEGRADED_DISTANCE)]);
        assert_eq!(
            r.get(&n(1)).unwrap(),
            Route {
                next_hop: n(1),
                hops: DEGRADED_DISTANCE
            }
        );
        assert!(r.advert_for(&n(2)).contains(&(n(1), DEGRADED_DISTANCE)));
        // No other way to n4: through the degraded link, but not offered to anyone.
        assert_eq!(r.get(&n(4)).unwrap().next_hop, n(1));
        assert!(r.advert_for(&n(2)).iter().all(|(d, _)| *d != n(4)));
        assert!(!r.set_degraded(n(1), true), "already degraded");
        assert!(r.set_degraded(n(1), false));
        assert_eq!(r.get(&n(3)).unwrap().next_hop, n(1));
        assert_eq!(
            r.get(&n(1)).unwrap(),
            Route {
                next_hop: n(1),
                hops: 1
            }
        );
        assert!(r.advert_for(&n(2)).contains(&(n(4), 2)));
        r.set_degraded(n(2), true);
        r.neighbour_down(&n(2));
        r.neighbour_up(n(2));
        assert!(!r.is_degraded(&n(2)), "a new link starts flowing");
    }

    #[test]
    fn distances_stop_at_unreachable_and_tables_are_bounded() {
        let mut r = Routes::new(n(0), 3);
        r.neighbour_up(n(1));
        let many: Vec<(NodeId, u8)> = (2..200).map(|i| (n(i), i % 20)).collect();
        r.advertised(n(1), &many);
        assert!(r.iter().count() <= 3);
        assert!(r.iter().all(|(_, route)| route.hops < UNREACHABLE));
    }
}
