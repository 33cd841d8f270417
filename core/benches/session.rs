fn main() {
    eprintln!("ARGS={:?}", std::env::args().collect::<Vec<_>>());
}
