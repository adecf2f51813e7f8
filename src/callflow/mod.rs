//! Kazoo-style callflows: the node tree, its typed validation, and the runtime that walks it.

pub mod modules;
pub mod node;
pub mod runtime;
