//! Session benchmarks: what the record layer and the hybrid handshake cost compared
//! with the cryptography they cannot avoid, measured in the same run so that the
//! ratios hold even on a noisy machine.
//!
//! ```text
//! cargo bench -p weft-mesh --bench session              # full run (release)
//! WEFT_BENCH_QUICK=1 cargo bench -p weft-mesh --bench session
//! cargo test -p weft-mesh --benches                      # quick run (see below)
//! ```
//!
//! Quick mode runs every code path with tiny sizes and one repetition. It is chosen
//! when `WEFT_BENCH_QUICK` is set (to anything but `0`), or when the binary is started
//! without the `--bench` argument: `cargo bench` passes `--bench` to `harness = false`
//! targets, `cargo test --benches` / `cargo test --bench session` pass nothing. Quick
//! figures (unoptimised core under `cargo test`) are not meaningful.
//!
//! Figures:
//! 1. Record layer: payload MB/s delivered end to end between two established hybrid
//!    links (`send` on A, `poll_transmit`, `handle_bytes` on B, drain `poll_event`),
//!    against bare ChaCha20-Poly1305 seal-in-place + open-in-place of the same bytes in
//!    record-sized chunks. Goal: link/bare >= 0.85.
//! 2. Handshakes: a complete Link handshake (both sides, one thread), against the sum of
//!    the primitive operations it performs, each timed on its own. Goal: sum/handshake
//!    >= 0.90. The operation count is in [`handshake_ops`].
//! 3. Handshake message sizes on the wire.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant as Clock;

use bytes::Bytes;
use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport, TryKeyInit};
use ml_kem::{MlKem768, Seed};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Hash};

use weft_mesh::frame::FrameType;
use weft_mesh::handshake::{Hello, PqPolicy, Remote, PROOF_LABEL};
use weft_mesh::link::{Link, LinkConfig, LinkEvent, MAX_TRANSMIT};
use weft_mesh::record::{MAX_PLAINTEXT, TAG_LEN};
use weft_mesh::{Identity, Instant, NodeId, Rng};

type DecapsulationKey = ml_kem::DecapsulationKey<MlKem768>;
type EncapsulationKey = ml_kem::EncapsulationKey<MlKem768>;

const GENESIS: [u8; 32] = [7; 32];
const NOW: Instant = Instant::ZERO;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The sender keeps at most this much queued, like a driver feeding a socket.
const SEND_WINDOW: usize = 4 * MAX_PLAINTEXT;

// ---------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------

struct Mode {
    quick: bool,
    /// Timed repetitions of each throughput figure (the median is reported).
    reps: usize,
    /// Payload bytes per repetition of a throughput figure.
    record_bytes: usize,
    /// Handshakes per repetition, and repetitions (many short ones: a median that
    /// shrugs off the bursts of a shared machine).
    handshakes: usize,
    handshake_reps: usize,
}

impl Mode {
    fn detect() -> Mode {
        let env_quick = std::env::var_os("WEFT_BENCH_QUICK").is_some_and(|v| v != "0");
        let under_bench = std::env::args().any(|a| a == "--bench");
        if env_quick || !under_bench {
            Mode {
                quick: true,
                reps: 1,
                record_bytes: 256 * KIB,
                handshakes: 2,
                handshake_reps: 1,
            }
        } else {
            Mode {
                quick: false,
                reps: 31,
                record_bytes: 8 * MIB,
                handshakes: 25,
                handshake_reps: 61,
            }
        }
    }
}

/// Median and quartiles of the repetitions of one figure.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    /// First and third quartile.
    q1: f64,
    q3: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            q1: v[n / 4],
            q3: v[(3 * n) / 4],
        }
    }

    /// Half the interquartile range relative to the median, in percent.
    fn spread_pct(&self) -> f64 {
        50.0 * (self.q3 - self.q1).abs() / self.median
    }
}

/// Seconds per call of each runner, timed in turns (one call of each per round, after
/// one untimed warm-up call each), so that the figures of a ratio share the machine's
/// state instead of being measured seconds apart.
fn seconds_interleaved(reps: usize, runs: &mut [&mut dyn FnMut()]) -> Vec<Stats> {
    runs.iter_mut().for_each(|run| run());
    let mut times = vec![Vec::with_capacity(reps); runs.len()];
    for _ in 0..reps {
        for (run, t) in runs.iter_mut().zip(&mut times) {
            let start = Clock::now();
            run();
            t.push(start.elapsed().as_secs_f64());
        }
    }
    times.into_iter().map(Stats::of).collect()
}

// ---------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------

struct Peers {
    alice: Arc<Identity>,
    bob: Arc<Identity>,
    rng: Rng,
}

impl Peers {
    fn new() -> Peers {
        let mut rng = Rng::from_seed([1; 32]);
        let alice = Arc::new(Identity::generate(&mut rng));
        let bob = Arc::new(Identity::generate(&mut rng));
        Peers { alice, bob, rng }
    }

    /// A new (initiator, responder) pair, not yet connected.
    fn pair(&mut self, pattern: Pat, config: &LinkConfig) -> (Link, Link) {
        let remote = match pattern {
            Pat::XX => Remote::Any,
            Pat::IK => Remote::Known(*self.bob.public()),
        };
        let a = Link::connect(
            config.clone(),
            self.alice.clone(),
            remote,
            self.rng.fork(),
            NOW,
        );
        let b = Link::accept(config.clone(), self.bob.clone(), self.rng.fork(), NOW);
        (a, b)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pat {
    XX,
    IK,
}

fn link_config(pq: PqPolicy) -> LinkConfig {
    let mut config = LinkConfig::new(GENESIS);
    config.handshake.pq = pq;
    config.record.max_queued_bytes = 1 << 30;
    config.record.reassembly_budget = 1 << 30;
    config
}

/// Move bytes both ways until neither side has anything to send; returns how many
/// `Established` events came out (2 when both sides are up) and whether both are hybrid.
fn shuttle(a: &mut Link, b: &mut Link, buf: &mut [u8]) -> (usize, bool) {
    let (mut up, mut hybrid) = (0, true);
    let mut drain = |l: &mut Link| {
        while let Some(e) = l.poll_event() {
            match e {
                LinkEvent::Established(peer) => {
                    up += 1;
                    hybrid &= peer.hybrid;
                }
                other => panic!("unexpected event during the handshake: {other:?}"),
            }
        }
    };
    loop {
        let mut moved = false;
        while let Some(n) = a.poll_transmit(NOW, buf) {
            b.handle_bytes(NOW, &buf[..n]);
            moved = true;
        }
        drain(b);
        while let Some(n) = b.poll_transmit(NOW, buf) {
            a.handle_bytes(NOW, &buf[..n]);
            moved = true;
        }
        drain(a);
        if !moved {
            return (up, hybrid);
        }
    }
}

/// One transmission seen during a handshake.
#[derive(Clone, Copy, Debug)]
struct Wire {
    /// Sent by the initiator.
    from_initiator: bool,
    /// Bytes on the wire, including the 2-byte length prefix.
    len: usize,
    /// A sealed record (e.g. IK key confirmation) rather than a handshake message.
    record: bool,
}

/// Run one handshake, recording every transmission until both sides are established.
fn transcript(peers: &mut Peers, pattern: Pat, pq: PqPolicy) -> (Vec<Wire>, bool) {
    /// Everything `tx` wants to send goes to `rx`; then `rx`'s events are drained.
    fn pump(tx: &mut Link, rx: &mut Link, from_initiator: bool, t: &mut Transcript) {
        loop {
            let before = tx.stats().records.records_sent;
            let Some(n) = tx.poll_transmit(NOW, &mut t.buf) else {
                break;
            };
            let record = tx.stats().records.records_sent > before;
            t.wire.push(Wire {
                from_initiator,
                len: n,
                record,
            });
            rx.handle_bytes(NOW, &t.buf[..n]);
        }
        while let Some(e) = rx.poll_event() {
            match e {
                LinkEvent::Established(peer) => {
                    t.up += 1;
                    t.hybrid &= peer.hybrid;
                }
                other => panic!("unexpected event: {other:?}"),
            }
        }
    }
    struct Transcript {
        buf: Vec<u8>,
        wire: Vec<Wire>,
        up: usize,
        hybrid: bool,
    }

    let config = link_config(pq);
    let (mut a, mut b) = peers.pair(pattern, &config);
    let mut t = Transcript {
        buf: vec![0u8; MAX_TRANSMIT],
        wire: Vec::new(),
        up: 0,
        hybrid: true,
    };
    for _ in 0..8 {
        pump(&mut a, &mut b, true, &mut t);
        pump(&mut b, &mut a, false, &mut t);
    }
    assert_eq!(t.up, 2, "{pattern:?} {pq:?}: both sides must come up");
    (t.wire, t.hybrid)
}

// ---------------------------------------------------------------------------------
// 1. Record layer
// ---------------------------------------------------------------------------------

struct Throughput {
    payload: usize,
    chunk: usize,
    link: Stats,
    bare: Stats,
}

/// A runner that pushes `frames` frames of `payload_len` bytes through an established
/// hybrid link pair, A to B, and checks that B delivered every byte. The pair and the
/// buffers are set up here, outside the timed calls.
fn link_runner(peers: &mut Peers, payload_len: usize, frames: usize) -> impl FnMut() {
    let config = link_config(PqPolicy::Prefer);
    let (mut a, mut b) = peers.pair(Pat::XX, &config);
    let mut buf = vec![0u8; MAX_TRANSMIT];
    let (up, hybrid) = shuttle(&mut a, &mut b, &mut buf);
    assert!(up == 2 && hybrid, "the record-layer pair must be hybrid");

    // Allocated once; `Bytes::clone` only bumps a reference count.
    let payload = Bytes::from(vec![0xa5u8; payload_len]);
    let total = frames * payload_len;
    move || {
        let mut sent = 0;
        let mut delivered = 0;
        while delivered < total {
            while sent < frames && a.queued_bytes() < SEND_WINDOW {
                a.send(FrameType::Message, payload.clone())
                    .expect("the queue limit is far above the window");
                sent += 1;
            }
            let n = a
                .poll_transmit(NOW, &mut buf)
                .expect("queued frames make a record");
            b.handle_bytes(NOW, &buf[..n]);
            while let Some(e) = b.poll_event() {
                match e {
                    LinkEvent::Frame {
                        frame_type: FrameType::Message,
                        payload,
                    } => {
                        assert_eq!(payload.len(), payload_len);
                        delivered += payload.len();
                    }
                    other => panic!("unexpected event: {other:?}"),
                }
            }
        }
        assert_eq!(sent, frames);
        assert!(a.is_established() && b.is_established());
    }
}

/// Bare ChaCha20-Poly1305 seal-in-place + open-in-place of `total` bytes in
/// `chunk`-byte messages (Noise nonces, no associated data, like the record layer).
fn bare_runner(total: usize, chunk: usize) -> impl FnMut() {
    let key = [9u8; 32];
    let tx = ChaCha20Poly1305::new(&key.into());
    let rx = ChaCha20Poly1305::new(&key.into());
    let mut buf = vec![0xa5u8; chunk];
    let mut counter = 0u64;
    move || {
        let mut left = total;
        while left > 0 {
            let len = left.min(chunk);
            let nonce = noise_nonce(counter);
            counter += 1;
            let tag = tx
                .encrypt_in_place_detached(&nonce.into(), &[], &mut buf[..len])
                .expect("seal");
            rx.decrypt_in_place_detached(&nonce.into(), &[], &mut buf[..len], &tag)
                .expect("open");
            left -= len;
        }
        black_box(&buf);
    }
}

fn noise_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce
}

/// Seconds per run to MB/s (10^6 bytes); the median stays the median, the quartiles swap.
fn mb_per_s(bytes: usize, s: Stats) -> Stats {
    let rate = |secs: f64| bytes as f64 / secs / 1e6;
    Stats {
        median: rate(s.median),
        q1: rate(s.q3),
        q3: rate(s.q1),
    }
}

fn record_layer(mode: &Mode, peers: &mut Peers) -> Vec<Throughput> {
    [KIB, 16 * KIB, 64 * KIB, MIB]
        .into_iter()
        .map(|payload| {
            let frames = (mode.record_bytes / payload).max(1);
            let total = frames * payload;
            let chunk = payload.min(MAX_PLAINTEXT);
            let mut link = link_runner(peers, payload, frames);
            let mut bare = bare_runner(total, chunk);
            let s = seconds_interleaved(mode.reps, &mut [&mut link, &mut bare]);
            Throughput {
                payload,
                chunk,
                link: mb_per_s(total, s[0]),
                bare: mb_per_s(total, s[1]),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// 2. Handshakes and their primitives
// ---------------------------------------------------------------------------------

/// Round-robin timing: every round runs one batch of every job, so that a burst of
/// load on a shared machine hits the handshakes and the primitives they are compared
/// with alike; each job's figure is its median over the rounds.
struct Rounds<'a> {
    jobs: Vec<Job<'a>>,
}

struct Job<'a> {
    /// Operations one batch performs.
    ops: usize,
    run: Box<dyn FnMut() + 'a>,
    secs: Vec<f64>,
}

/// Index of a job in [`Rounds`].
#[derive(Clone, Copy)]
struct JobId(usize);

/// A batch of a primitive should take about this long (one round runs them all).
const BATCH_SECS: f64 = 0.5e-3;

impl<'a> Rounds<'a> {
    fn add(&mut self, ops: usize, run: impl FnMut() + 'a) -> JobId {
        self.jobs.push(Job {
            ops,
            run: Box::new(run),
            secs: Vec::new(),
        });
        JobId(self.jobs.len() - 1)
    }

    /// A job of one primitive operation per call, batched to about [`BATCH_SECS`].
    fn add_op(&mut self, mode: &Mode, mut op: impl FnMut() + 'a) -> JobId {
        let iters = if mode.quick {
            1
        } else {
            (0..3).for_each(|_| op());
            let t = Clock::now();
            (0..8).for_each(|_| op());
            let each = t.elapsed().as_secs_f64() / 8.0;
            ((BATCH_SECS / each) as usize).clamp(1, 20_000)
        };
        self.add(iters, move || (0..iters).for_each(|_| op()))
    }

    fn run(&mut self, rounds: usize) {
        self.jobs.iter_mut().for_each(|j| (j.run)());
        for _ in 0..rounds {
            for j in &mut self.jobs {
                let t = Clock::now();
                (j.run)();
                j.secs.push(t.elapsed().as_secs_f64());
            }
        }
    }

    /// Median nanoseconds per operation of a job.
    fn ns(&self, id: JobId) -> Stats {
        let j = &self.jobs[id.0];
        Stats::of(j.secs.iter().map(|s| s * 1e9 / j.ops as f64).collect())
    }
}

/// A primitive operation a handshake performs, with the size it works on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Prim {
    /// X25519 fixed-base multiplication as the core's resolver does it (x25519-dalek 3
    /// with precomputed tables): the ephemeral key.
    X25519Keygen,
    /// X25519 for `ee`, `es`, `se`, `ss` as the core's resolver does it (x25519-dalek 3;
    /// the all-zero check, a 32-byte constant-time compare, is left out).
    X25519Dh,
    /// Noise MixHash of this many bytes: `h = SHA-256(h || data)`.
    MixHash(usize),
    /// Noise HKDF with two outputs of a 32-byte DH result.
    MixKey,
    /// Noise HKDF with two outputs of nothing.
    Split,
    /// ChaCha20-Poly1305 encryption and decryption of this many bytes with `h` as
    /// associated data, through snow's cipher.
    NoiseAead(usize),
    Ed25519Sign,
    /// Ed25519 verify_strict from the key's bytes (decompression included).
    Ed25519Verify,
    /// SHA-256 of a 32-byte key (`NodeId::derive`).
    NodeId,
    /// ML-KEM-768 key generation from a seed, with encoding the encapsulation key.
    KemKeygen,
    /// ML-KEM-768 encapsulation to a received key (decode, check and hash it first).
    KemEncaps,
    KemDecaps,
    /// The core's hybrid key schedule: HKDF-Extract and two Expands.
    HybridHkdf,
    /// A record's seal + open of this many bytes (in place, no associated data).
    RecordAead(usize),
    /// x25519-dalek 3 fixed-base multiplication, for reference.
    Dalek3Keygen,
    /// x25519-dalek 3 DH, for reference.
    Dalek3Dh,
}

/// Builds the timed closure of each primitive, running the very code the core runs:
/// snow's default resolver for everything inside Noise (X25519 on curve25519-dalek 4,
/// SHA-256 from sha2 0.10, ChaCha20-Poly1305 from chacha20poly1305 0.10), and the
/// crates the core calls directly for the rest (ed25519-dalek 3, sha2 0.11, ml-kem
/// 0.3, hkdf 0.13, chacha20poly1305 0.10).
struct Primitives {
    rng: ChaCha20Rng,
}

fn snow_hash() -> Box<dyn Hash> {
    DefaultResolver
        .resolve_hash(&HashChoice::SHA256)
        .expect("snow resolves SHA-256")
}

impl Primitives {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill_bytes(&mut out);
        out
    }

    /// The closure that performs one `prim`.
    fn op(&mut self, prim: Prim) -> Box<dyn FnMut()> {
        match prim {
            Prim::X25519Keygen => {
                let mut rng = ChaCha20Rng::from_seed(self.array());
                Box::new(move || {
                    let mut secret = [0u8; 32];
                    rng.fill_bytes(&mut secret);
                    let secret = x25519_dalek::StaticSecret::from(secret);
                    black_box(x25519_dalek::PublicKey::from(&secret));
                })
            }
            Prim::X25519Dh => {
                let ours = self.array();
                let theirs =
                    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.array()))
                        .to_bytes();
                Box::new(move || {
                    black_box(x25519_dalek::x25519(black_box(ours), black_box(theirs)));
                })
            }
            Prim::Dalek3Keygen => {
                let secret = x25519_dalek::StaticSecret::from(self.array());
                Box::new(move || {
                    black_box(x25519_dalek::PublicKey::from(black_box(&secret)));
                })
            }
            Prim::Dalek3Dh => {
                let secret = x25519_dalek::StaticSecret::from(self.array());
                let theirs =
                    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.array()));
                Box::new(move || {
                    black_box(secret.diffie_hellman(black_box(&theirs)));
                })
            }
            Prim::MixHash(len) => {
                let mut hasher = snow_hash();
                let data = vec![0x5au8; len];
                let mut h = [0u8; 32];
                Box::new(move || {
                    hasher.reset();
                    hasher.input(&h);
                    hasher.input(black_box(&data));
                    hasher.result(&mut h);
                })
            }
            Prim::MixKey | Prim::Split => {
                let mut hasher = snow_hash();
                let ck = self.array::<32>();
                let ikm = if prim == Prim::MixKey {
                    self.array::<32>().to_vec()
                } else {
                    Vec::new()
                };
                let (mut o1, mut o2) = ([0u8; 64], [0u8; 64]);
                Box::new(move || {
                    hasher.hkdf(black_box(&ck), &ikm, 2, &mut o1, &mut o2, &mut []);
                    black_box((&o1, &o2));
                })
            }
            Prim::NoiseAead(len) => {
                let mut cipher: Box<dyn Cipher> = DefaultResolver
                    .resolve_cipher(&CipherChoice::ChaChaPoly)
                    .expect("snow resolves ChaChaPoly");
                cipher.set(&self.array::<32>());
                let ad = self.array::<32>();
                let plain = vec![0x11u8; len];
                let mut sealed = vec![0u8; len + TAG_LEN];
                let mut opened = vec![0u8; len];
                Box::new(move || {
                    let n = cipher.encrypt(0, &ad, black_box(&plain), &mut sealed);
                    let m = cipher
                        .decrypt(0, &ad, &sealed[..n], &mut opened)
                        .expect("authentic");
                    black_box(m);
                })
            }
            Prim::RecordAead(len) => {
                let cipher = ChaCha20Poly1305::new(&self.array::<32>().into());
                let mut buf = vec![0u8; len];
                Box::new(move || {
                    let nonce = noise_nonce(1).into();
                    let tag = cipher
                        .encrypt_in_place_detached(&nonce, &[], black_box(&mut buf))
                        .expect("seal");
                    cipher
                        .decrypt_in_place_detached(&nonce, &[], &mut buf, &tag)
                        .expect("open");
                })
            }
            Prim::Ed25519Sign | Prim::Ed25519Verify => {
                let key = SigningKey::from_bytes(&self.array::<32>());
                let public = key.verifying_key().to_bytes();
                let message = self.proof_message(&public);
                if prim == Prim::Ed25519Sign {
                    return Box::new(move || {
                        black_box(key.sign(black_box(&message)));
                    });
                }
                let signature = key.sign(&message).to_bytes();
                Box::new(move || {
                    let vk = VerifyingKey::from_bytes(black_box(&public)).expect("valid key");
                    let sig = Signature::from_bytes(black_box(&signature));
                    assert!(vk.verify_strict(&message, &sig).is_ok());
                })
            }
            Prim::NodeId => {
                let key = self.array::<32>();
                Box::new(move || {
                    let digest: [u8; 32] = Sha256::digest(black_box(&key)).into();
                    black_box(digest);
                })
            }
            Prim::KemKeygen | Prim::KemEncaps | Prim::KemDecaps => self.ml_kem(prim),
            Prim::HybridHkdf => {
                let salt = self.array::<64>();
                let ss = self.array::<32>();
                let h = self.array::<32>();
                Box::new(move || {
                    let prk = Hkdf::<Sha256>::new(Some(black_box(&salt[..])), &ss);
                    let mut k1 = [0u8; 32];
                    let mut k2 = [0u8; 32];
                    prk.expand_multi_info(&[b"weft-mesh/1 hybrid i2r", &h], &mut k1)
                        .expect("32 bytes");
                    prk.expand_multi_info(&[b"weft-mesh/1 hybrid r2i", &h], &mut k2)
                        .expect("32 bytes");
                    black_box((k1, k2));
                })
            }
        }
    }

    /// The identity-proof message the core signs: label, role, h, static key, hello.
    fn proof_message(&mut self, signing_key: &[u8; 32]) -> Vec<u8> {
        let hello = Hello {
            node_id: NodeId::derive(signing_key),
            governance_genesis_hash: GENESIS,
            governance_version: 0,
            capabilities: 0,
            kem_supported: true,
            chain_seq: 0,
            supported_sync_streams: 0,
        }
        .encode();
        let mut m = PROOF_LABEL.to_vec();
        m.push(b'R');
        m.extend_from_slice(&self.array::<32>());
        m.extend_from_slice(&self.array::<32>());
        m.extend_from_slice(&hello);
        m
    }

    /// ML-KEM-768 as the core runs it. Several keys are cycled through, since the time
    /// matrix sampling takes depends on the key.
    fn ml_kem(&mut self, prim: Prim) -> Box<dyn FnMut()> {
        const KEYS: usize = 16;
        let seeds: Vec<Seed> = (0..KEYS)
            .map(|_| {
                let mut seed = Seed::default();
                self.rng.fill_bytes(&mut seed);
                seed
            })
            .collect();
        let mut i = 0;
        if prim == Prim::KemKeygen {
            return Box::new(move || {
                let dk = DecapsulationKey::from_seed(seeds[i % KEYS]);
                black_box(dk.encapsulation_key().to_bytes());
                i += 1;
            });
        }
        let dks: Vec<DecapsulationKey> = seeds
            .iter()
            .map(|s| DecapsulationKey::from_seed(*s))
            .collect();
        let eks: Vec<Vec<u8>> = dks
            .iter()
            .map(|dk| dk.encapsulation_key().to_bytes().to_vec())
            .collect();
        let mut rng = ChaCha20Rng::from_seed(self.array());
        if prim == Prim::KemEncaps {
            return Box::new(move || {
                let ek = EncapsulationKey::new_from_slice(&eks[i % KEYS]).expect("valid key");
                black_box(ek.encapsulate_with_rng(&mut rng));
                i += 1;
            });
        }
        let cts: Vec<Vec<u8>> = eks
            .iter()
            .map(|ek| {
                let ek = EncapsulationKey::new_from_slice(ek).expect("valid key");
                ek.encapsulate_with_rng(&mut rng).0.to_vec()
            })
            .collect();
        Box::new(move || {
            let k = i % KEYS;
            black_box(dks[k].decapsulate_slice(&cts[k]).expect("right length"));
            i += 1;
        })
    }
}

/// One kind of primitive operation in a handshake and how often it happens.
struct Op {
    what: String,
    prim: Prim,
    count: usize,
    /// Work the protocol does not need (done twice, or recomputing a known value).
    redundant: bool,
}

/// The primitive operations of one complete hybrid handshake, both sides together.
///
/// Noise (snow 0.10; per side unless noted):
///
/// ```text
///                         XX (-> e; <- e,ee,s,es; -> s,se)   IK (<- s ...; -> e,es,s,ss; <- e,ee,se)
/// X25519 keygen (e)       1                                  1
/// X25519 DH               3 (ee, es|se, se|es)               4 (es, ss, ee, se)
/// MixHash (SHA-256)       8: prologue, e, payload1 (clear),  7: prologue, pre-message rs, e,
///                            e, enc s, payload2, enc s,         enc s, payload1, e, payload2
///                            payload3
/// MixKey (HKDF, 2 out)    3                                  4
/// AEAD (h as AD)          XX: 4 encrypt + 4 decrypt in all: s and payload of msgs 2 and 3
///                         IK: 3 encrypt + 3 decrypt in all: s and payload of msg 1, payload of msg 2
/// Split (HKDF, 2 out)     1, the core's dangerously_get_raw_split
/// redundant:              +1 Split: snow splits by itself after the last message, then
///                            the core asks for the raw split again.
/// ```
///
/// weft-mesh on top (both sides together): 2 Ed25519 signatures (one identity proof
/// each), 2 Ed25519 verify_strict (with key decompression), 2 SHA-256 of a 32-byte key
/// (`NodeId::derive` of the peer's key), 1 ML-KEM-768 key generation from a seed (with
/// encoding the key), 1 encapsulation (with decoding and hashing the received key), 1
/// decapsulation, 2 hybrid HKDFs (extract + 2 expands, one per side), and any record
/// sealed and opened before both sides report `Established` (IK key confirmation).
///
/// Payload sizes for MixHash and the AEAD come from the wire sizes of a real run.
fn handshake_ops(pattern: Pat, wire: &[Wire]) -> Vec<Op> {
    let bodies: Vec<usize> = wire
        .iter()
        .filter(|w| !w.record)
        .map(|w| w.len - 2)
        .collect();
    const PRE: usize = 2; // version and pattern bytes before the first Noise message
    const E: usize = 32;
    const S_ENC: usize = 32 + TAG_LEN;
    // (MixHash input sizes per side, AEAD plaintext sizes, DH per side, MixKey per side)
    let (hashes, aeads, dh, mix_keys) = match pattern {
        Pat::XX => {
            let [b1, b2, b3] = bodies[..] else {
                panic!("XX has three messages, saw {bodies:?}")
            };
            let p1 = b1 - PRE - E;
            let c2 = b2 - E - S_ENC;
            let c3 = b3 - S_ENC;
            (
                vec![11, E, p1, E, S_ENC, c2, S_ENC, c3],
                vec![32, c2 - TAG_LEN, 32, c3 - TAG_LEN],
                3,
                3,
            )
        }
        Pat::IK => {
            let [b1, b2] = bodies[..] else {
                panic!("IK has two messages, saw {bodies:?}")
            };
            let c1 = b1 - PRE - E - S_ENC;
            let c2 = b2 - E;
            (
                vec![11, 32, E, S_ENC, c1, E, c2],
                vec![32, c1 - TAG_LEN, c2 - TAG_LEN],
                4,
                4,
            )
        }
    };
    let op = |what: String, prim: Prim, count: usize| Op {
        what,
        prim,
        count,
        redundant: false,
    };
    let mut ops = vec![
        op("X25519 keygen, ephemeral".into(), Prim::X25519Keygen, 2),
        op("X25519 DH".into(), Prim::X25519Dh, 2 * dh),
    ];
    // Equal sizes fold into one line each.
    let mut hash_counts: Vec<(usize, usize)> = Vec::new();
    for len in hashes {
        match hash_counts.iter_mut().find(|(l, _)| *l == len) {
            Some((_, n)) => *n += 2,
            None => hash_counts.push((len, 2)),
        }
    }
    for (len, n) in hash_counts {
        ops.push(op(format!("Noise MixHash, {len} B"), Prim::MixHash(len), n));
    }
    ops.push(op(
        "Noise MixKey (HKDF-SHA256)".into(),
        Prim::MixKey,
        2 * mix_keys,
    ));
    let mut aead_counts: Vec<(usize, usize)> = Vec::new();
    for len in aeads {
        match aead_counts.iter_mut().find(|(l, _)| *l == len) {
            Some((_, n)) => *n += 1,
            None => aead_counts.push((len, 1)),
        }
    }
    for (len, n) in aead_counts {
        ops.push(op(
            format!("Noise ChaChaPoly enc+dec, {len} B"),
            Prim::NoiseAead(len),
            n,
        ));
    }
    ops.push(op("Noise Split (HKDF-SHA256)".into(), Prim::Split, 2));
    ops.push(op("Ed25519 sign".into(), Prim::Ed25519Sign, 2));
    ops.push(op("Ed25519 verify_strict".into(), Prim::Ed25519Verify, 2));
    ops.push(op("SHA-256 NodeId::derive".into(), Prim::NodeId, 2));
    ops.push(op("ML-KEM-768 keygen (seed)".into(), Prim::KemKeygen, 1));
    ops.push(op("ML-KEM-768 encapsulate".into(), Prim::KemEncaps, 1));
    ops.push(op("ML-KEM-768 decapsulate".into(), Prim::KemDecaps, 1));
    ops.push(op(
        "hybrid HKDF (extract+2 expand)".into(),
        Prim::HybridHkdf,
        2,
    ));
    for len in wire
        .iter()
        .filter(|w| w.record)
        .map(|w| w.len - 2 - TAG_LEN)
    {
        ops.push(op(
            format!("record seal+open, {len} B (key confirmation)"),
            Prim::RecordAead(len),
            1,
        ));
    }
    ops.push(Op {
        what: "Noise Split again (snow's own)".into(),
        prim: Prim::Split,
        count: 2,
        redundant: true,
    });
    ops
}

struct HandshakeFigure {
    pattern: Pat,
    /// Microseconds per handshake.
    handshake: Stats,
    /// The operations with their median cost in nanoseconds.
    ops: Vec<(Op, f64)>,
}

impl HandshakeFigure {
    fn sum_us(&self, redundant: bool) -> f64 {
        self.ops
            .iter()
            .filter(|(o, _)| redundant || !o.redundant)
            .map(|(o, ns)| o.count as f64 * ns)
            .sum::<f64>()
            / 1e3
    }
}

/// Time XX and IK hybrid handshakes (both sides, from `Link::connect` / `Link::accept`
/// to both `Established` events) and every primitive they perform, round robin.
/// Returns the two figures and the x25519-dalek 3 reference costs (ns).
fn handshakes(mode: &Mode, peers: &mut Peers) -> (Vec<HandshakeFigure>, f64, f64) {
    let patterns = [Pat::XX, Pat::IK];
    let op_lists: Vec<Vec<Op>> = patterns
        .iter()
        .map(|&pattern| {
            let (wire, hybrid) = transcript(peers, pattern, PqPolicy::Prefer);
            assert!(hybrid);
            handshake_ops(pattern, &wire)
        })
        .collect();

    let config = link_config(PqPolicy::Prefer);
    let peers = std::cell::RefCell::new(peers);
    let mut rounds = Rounds { jobs: Vec::new() };
    let n = mode.handshakes;
    let hs_jobs: Vec<JobId> = patterns
        .iter()
        .map(|&pattern| {
            let mut buf = vec![0u8; MAX_TRANSMIT];
            let (config, peers) = (&config, &peers);
            rounds.add(n, move || {
                for _ in 0..n {
                    let (mut a, mut b) = peers.borrow_mut().pair(pattern, config);
                    let (up, hybrid) = shuttle(&mut a, &mut b, &mut buf);
                    assert!(up == 2 && hybrid, "{pattern:?}: hybrid session expected");
                    black_box((a, b));
                }
            })
        })
        .collect();
    let mut prims = Primitives {
        rng: ChaCha20Rng::from_seed([4; 32]),
    };
    let mut prim_jobs: Vec<(Prim, JobId)> = Vec::new();
    let wanted = op_lists
        .iter()
        .flatten()
        .map(|o| o.prim)
        .chain([Prim::Dalek3Keygen, Prim::Dalek3Dh]);
    for prim in wanted {
        if !prim_jobs.iter().any(|(p, _)| *p == prim) {
            let op = prims.op(prim);
            prim_jobs.push((prim, rounds.add_op(mode, op)));
        }
    }
    rounds.run(mode.handshake_reps);

    let cost = |prim: Prim| {
        let (_, id) = prim_jobs.iter().find(|(p, _)| *p == prim).expect("timed");
        rounds.ns(*id).median
    };
    let figures = patterns
        .iter()
        .zip(op_lists)
        .zip(hs_jobs)
        .map(|((&pattern, ops), id)| {
            let ns = rounds.ns(id);
            HandshakeFigure {
                pattern,
                handshake: Stats {
                    median: ns.median / 1e3,
                    q1: ns.q1 / 1e3,
                    q3: ns.q3 / 1e3,
                },
                ops: ops
                    .into_iter()
                    .map(|o| {
                        let c = cost(o.prim);
                        (o, c)
                    })
                    .collect(),
            }
        })
        .collect();
    (figures, cost(Prim::Dalek3Keygen), cost(Prim::Dalek3Dh))
}

// ---------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------

fn size_name(n: usize) -> String {
    if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{} KiB", n / KIB)
    }
}

fn verdict(mode: &Mode, ratio: f64, goal: f64) -> &'static str {
    if mode.quick {
        "(quick run: not judged)"
    } else if ratio >= goal {
        "ok"
    } else {
        "MISSED"
    }
}

fn main() {
    let mode = Mode::detect();
    let started = Clock::now();
    let mut peers = Peers::new();

    println!(
        "weft-mesh session benchmarks: {} mode, {} CPU(s); medians, after a warm-up, of {} \
         throughput runs and of {} rounds of {} handshakes + a batch of each primitive",
        if mode.quick {
            "QUICK (figures not meaningful)"
        } else {
            "full"
        },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mode.reps,
        mode.handshake_reps,
        mode.handshakes,
    );
    println!("iqr% = half the interquartile range of the runs, relative to the median");

    // Optional section filters after the flags, e.g. `cargo bench --bench session -- handshake`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want =
        |section: &str| filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()));
    if want("record") {
        print_record_layer(&mode, &mut peers);
    }
    if want("handshake") {
        print_handshakes(&mode, &mut peers);
    }
    if want("sizes") {
        print_sizes(&mut peers);
    }
    println!();
    println!("total bench time {:.2} s", started.elapsed().as_secs_f64());
}

fn print_record_layer(mode: &Mode, peers: &mut Peers) {
    let tp = record_layer(mode, peers);
    println!();
    println!(
        "1. Record layer, hybrid Link A -> B end to end ({} of payload per run) vs bare ChaCha20-Poly1305 seal+open",
        size_name(mode.record_bytes)
    );
    println!(
        "   {:<36} {:>10} {:>6} {:>10} {:>6} {:>10}  goal",
        "figure", "link MB/s", "iqr%", "bare MB/s", "iqr%", "link/bare"
    );
    for t in &tp {
        let ratio = t.link.median / t.bare.median;
        println!(
            "   {:<36} {:>10.0} {:>6.1} {:>10.0} {:>6.1} {:>9.3}x  >= 0.85x {}",
            format!(
                "{} frames (bare: {} B chunks)",
                size_name(t.payload),
                t.chunk
            ),
            t.link.median,
            t.link.spread_pct(),
            t.bare.median,
            t.bare.spread_pct(),
            ratio,
            verdict(mode, ratio, 0.85),
        );
    }
}

fn print_handshakes(mode: &Mode, peers: &mut Peers) {
    let (figures, dalek3_keygen, dalek3_dh) = handshakes(mode, peers);
    let (xx, ik) = (&figures[0], &figures[1]);

    println!();
    println!("2. Hybrid handshake (PqPolicy::Prefer), both sides in one thread, vs its primitives");
    println!(
        "   {:<56} {:>9} {:>5} {:>9} {:>5} {:>9}",
        "primitive (per handshake, both sides)", "us each", "XX n", "XX us", "IK n", "IK us"
    );
    let mut names: Vec<&str> = Vec::new();
    for redundant in [false, true] {
        for f in &figures {
            for (o, _) in f.ops.iter().filter(|(o, _)| o.redundant == redundant) {
                if !names.contains(&o.what.as_str()) {
                    names.push(&o.what);
                }
            }
        }
    }
    for name in names {
        fn find<'f>(f: &'f HandshakeFigure, name: &str) -> Option<&'f (Op, f64)> {
            f.ops.iter().find(|(o, _)| o.what == name)
        }
        let cell = |f: &HandshakeFigure| {
            find(f, name).map_or((String::from("-"), String::from("-")), |(o, ns)| {
                (
                    o.count.to_string(),
                    format!("{:.2}", o.count as f64 * ns / 1e3),
                )
            })
        };
        let (o, ns) = find(xx, name).or_else(|| find(ik, name)).expect("listed");
        let (xn, xt) = cell(xx);
        let (inn, it) = cell(ik);
        println!(
            "   {:<56} {:>9.2} {:>5} {:>9} {:>5} {:>9}",
            format!("{}{name}", if o.redundant { "redundant: " } else { "" }),
            ns / 1e3,
            xn,
            xt,
            inn,
            it,
        );
    }
    println!(
        "   reference, not summed: x25519-dalek 3 keygen {:.2} us, DH {:.2} us (separate runs of the rows above)",
        dalek3_keygen / 1e3,
        dalek3_dh / 1e3,
    );
    println!();
    println!(
        "   {:<36} {:>12} {:>6} {:>8} {:>14} {:>9}  goal",
        "figure", "handshake us", "iqr%", "per s", "primitives us", "prim/hs"
    );
    for f in &figures {
        let hs = f.handshake.median;
        let required = f.sum_us(false);
        let all = f.sum_us(true);
        println!(
            "   {:<36} {:>12.1} {:>6.1} {:>8.0} {:>14.1} {:>8.3}x  >= 0.90x {}",
            format!("{:?} hybrid, required primitives", f.pattern),
            hs,
            f.handshake.spread_pct(),
            1e6 / hs,
            required,
            required / hs,
            verdict(mode, required / hs, 0.90),
        );
        println!(
            "   {:<36} {:>12.1} {:>6} {:>8} {:>14.1} {:>8.3}x  (incl. redundant crypto)",
            format!("{:?} hybrid, all crypto done", f.pattern),
            hs,
            "",
            "",
            all,
            all / hs,
        );
    }
}

fn print_sizes(peers: &mut Peers) {
    println!();
    println!("3. Handshake messages on the wire (bytes incl. the 2-byte length prefix; I = initiator, R = responder)");
    println!(
        "   {:<22} {:<44} {:>8}",
        "pattern, policy", "messages", "total"
    );
    for pattern in [Pat::XX, Pat::IK] {
        for (pq, name) in [(PqPolicy::Prefer, "hybrid"), (PqPolicy::Off, "classical")] {
            let (wire, hybrid) = transcript(peers, pattern, pq);
            assert_eq!(hybrid, pq != PqPolicy::Off);
            let hs: Vec<&Wire> = wire.iter().filter(|w| !w.record).collect();
            let mut parts: Vec<String> = hs
                .iter()
                .map(|w| {
                    format!(
                        "{}->{} {}",
                        dir(w.from_initiator),
                        dir(!w.from_initiator),
                        w.len
                    )
                })
                .collect();
            for r in wire.iter().filter(|w| w.record) {
                parts.push(format!(
                    "(+ record {}->{} {})",
                    dir(r.from_initiator),
                    dir(!r.from_initiator),
                    r.len
                ));
            }
            println!(
                "   {:<22} {:<44} {:>8}",
                format!("{pattern:?} {name}"),
                parts.join(", "),
                hs.iter().map(|w| w.len).sum::<usize>(),
            );
        }
    }
}

fn dir(initiator: bool) -> &'static str {
    if initiator {
        "I"
    } else {
        "R"
    }
}
