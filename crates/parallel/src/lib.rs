//! Multi-worker batched ingest (DESIGN §5).
#![deny(missing_docs)]
