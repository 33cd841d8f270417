//! `weft-mesh`: run a node, send a message, or watch a demo cluster on loopback.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
