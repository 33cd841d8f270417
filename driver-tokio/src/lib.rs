//! weft-mesh on tokio. The socket binding, the async API and the `weft-mesh` program
//! are the next step (issue 3); today this crate only re-exports the core so that the
//! workspace layout is in place.
pub use weft_mesh as core;
