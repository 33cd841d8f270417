//! Fuzz harnesses of the cluster layer's decoders and the state machines behind them:
//! SWIM packets ([`Swim::handle_packet`]), registry gossip ([`Gossip`],
//! [`OriginMap::handle`]), sync digests ([`SyncDigest`]) and service resolution
//! ([`ResolveMessage`]). Raw bytes must never panic, and what decodes must encode back
//! to the same bytes (each format has one encoding), so a decoder that accepts
//! something its encoder would never write shows up.

use bolero::check;
use bytes::Bytes;
use weft_mesh::membership::{MemberInfo, Swim, SwimConfig};
use weft_mesh::registry::{
    ProcessGossip, ProcessInfo, ProcessTable, RegistryConfig, ServiceGossip, ServiceInfo,
    ServiceName, ServiceRegistry, SyncDigest,
};
use weft_mesh::resolve::ResolveMessage;
use weft_mesh::{Instant, NodeId, Rng};

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

/// A member of a three-node cluster that has exchanged state with both others.
fn swim() -> Swim {
    let now = Instant::ZERO;
    let mut nodes: Vec<Swim> = (1..=3)
        .map(|n| {
            Swim::new(
                id(n),
                vec![format!("tcp://10.0.0.{n}:7000")],
                SwimConfig::lan(),
                Rng::from_seed([n; 32]),
            )
        })
        .collect();
    nodes[0].contact(now, id(2));
    nodes[0].contact(now, id(3));
    for _ in 0..4 {
        for i in 0..3 {
            while let Some(t) = nodes[i].poll_transmit(now) {
                let to = usize::from(t.to.as_bytes()[0] - 1);
                let _ = nodes[to].handle_packet(now, id(i as u8 + 1), &t.packet);
            }
        }
    }
    nodes.swap_remove(0)
}

fn view(s: &Swim) -> Vec<MemberInfo> {
    s.members().collect()
}

#[test]
fn swim_packets() {
    assert_eq!(swim().alive_count(), 3, "the harness cluster formed");
    check!().for_each(|bytes: &[u8]| {
        let mut s = swim();
        let before = view(&s);
        let now = Instant::from_micros(1);
        match s.handle_packet(now, id(2), bytes) {
            // A malformed packet changes nothing.
            Err(_) => assert_eq!(view(&s), before),
            Ok(()) => {
                s.handle_timeout(now);
                while let Some(t) = s.poll_transmit(now) {
                    assert!(t.packet.len() <= SwimConfig::lan().max_packet);
                }
                assert!(s.members().count() <= SwimConfig::lan().max_members);
            }
        }
    });
}

fn registries() -> (ServiceRegistry, ProcessTable) {
    let now = Instant::ZERO;
    let mut services = ServiceRegistry::new(id(1), 5, RegistryConfig::default());
    let mut processes = ProcessTable::new(id(1), 5, RegistryConfig::default());
    let mut other = ServiceRegistry::new(id(2), 3, RegistryConfig::default());
    for (i, name) in ["db", "kv", "web"].iter().enumerate() {
        let name = ServiceName::new(*name).unwrap();
        services
            .insert(
                now,
                name.clone(),
                ServiceInfo::new(Bytes::from(vec![i as u8; i])).unwrap(),
            )
            .unwrap();
        other
            .insert(now, name, ServiceInfo::new(Bytes::new()).unwrap())
            .unwrap();
    }
    services
        .remove(now, &ServiceName::new("kv").unwrap())
        .unwrap();
    let theirs = other.delta_since(&id(2), Default::default(), 4096).unwrap();
    services.apply(now, theirs).unwrap();
    processes
        .insert(now, 7, ProcessInfo::new("worker", Bytes::new()).unwrap())
        .unwrap();
    (services, processes)
}

#[test]
fn registry_gossip() {
    let (services, processes) = registries();
    check!().for_each(|bytes: &[u8]| {
        let now = Instant::from_micros(1);
        if let Some(g) = ServiceGossip::decode(bytes) {
            assert_eq!(&g.encode()[..], bytes, "one encoding");
            let mut s = services.clone();
            let handled = s.handle(now, g, 64 * 1024);
            for reply in handled.replies {
                assert!(ServiceGossip::decode(&reply.encode()).is_some());
            }
            let limits = s.config().clone();
            assert!(s.origins().count() <= limits.max_origins);
        }
        if let Some(g) = ProcessGossip::decode(bytes) {
            assert_eq!(&g.encode()[..], bytes, "one encoding");
            let mut p = processes.clone();
            p.handle(now, g, 64 * 1024);
        }
    });
}

#[test]
fn sync_digests() {
    let (mut services, _) = registries();
    check!().for_each(|bytes: &[u8]| {
        if let Some(d) = SyncDigest::decode(bytes) {
            assert_eq!(SyncDigest::decode(&d.encode()), Some(d.clone()));
            if let Some(summary) = &d.services {
                for g in services.answer_summary(summary, 64 * 1024) {
                    assert!(ServiceGossip::decode(&g.encode()).is_some());
                }
            }
        }
    });
}

#[test]
fn resolve_messages() {
    check!().for_each(|bytes: &[u8]| {
        if let Some(m) = ResolveMessage::decode(bytes) {
            assert_eq!(&m.encode()[..], bytes, "one encoding");
        }
    });
}
