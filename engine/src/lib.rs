//! The blast engine: Python environments as immutable, content-addressed, layered snapshots.
//!
//! Plumbing for the `blast` CLI, one idea per module:
//! - [`objects`]: the content-addressed object store and its staging areas.
//! - [`index`]: the RocksDB metadata index (environments, history, tags, journals).
//! - [`tree`]: flattened trees of layers and their differences.
//! - [`capture`]: reading a live directory back into a tree, with a stat cache (a file per
//!   environment under `stat-caches/`).
//! - [`materialize`]: making a directory hold a tree (reflink, hardlink, copy).
//! - [`transition`]: crash-safe HEAD moves (journal, apply, record).
//! - [`dir_move`]: crash-safe moves of an environment's directory to another path.
//! - [`python`], [`venv`]: interpreter discovery and the venv's own files.
//! - [`packages`]: the package view from `*.dist-info`.
//! - [`sandbox`]: namespaces and an overlay around an installer run.
//! - [`installer`]: which installer runs for an environment, with what command line.
//! - [`markers`]: an interpreter's PEP 508 marker environment, asked once and cached.
//! - [`conflicts`]: requirements that do not hold, explained by pubgrub.
//! - [`gc`]: garbage collection.
//! - [`metrics`]: timing samples of installs and captures, kept in the index.
//! - [`processes`]: the processes running from an environment, with their CPU and memory use.
//! - [`imports`]: the import-tracking hook of an environment and what its records say.
//! - [`images`]: `.blast` images, written deterministically and read trusting nothing; their OCI layout.
//! - [`registry`]: the OCI Distribution API (references, credentials, blobs, manifests).
//! - [`session`]: live sessions' records and the protocol their clients speak.
//! - [`shell`]: the session's shell (bash, zsh, fish) with the prompt hook.
//! - [`watcher`]: the session's event loop: file events, control socket, captures.
//! - [`ops`]: the operations behind the commands.

pub mod capture;
pub mod conflicts;
mod crash;
pub mod dir_move;
pub mod error;
mod fsutil;
pub mod gc;
pub mod images;
pub mod imports;
pub mod index;
pub mod installer;
mod lock;
pub mod markers;
pub mod materialize;
pub mod metrics;
pub mod objects;
pub mod ops;
pub mod packages;
pub mod processes;
pub mod python;
pub mod registry;
pub mod sandbox;
pub mod session;
pub mod shell;
pub mod store;
pub mod transition;
pub mod tree;
pub mod venv;
pub mod watcher;

pub use error::{Error, Result};
pub use store::{Env, Store};
pub use store_format;
