//! Cross-crate tests of weft-mesh. The deterministic multi-node simulator arrives with
//! the mesh (issue 4).
