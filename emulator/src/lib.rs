//! A Kubernetes API server emulator. See `DESIGN.md`.

pub mod apply;
pub mod patch;
pub mod protobuf;
pub mod resource;
pub mod schema;
pub mod status;
