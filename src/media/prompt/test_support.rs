//! Test helpers shared by the prompt and TTS tests: a fresh temp dir removed on drop.
//! Apart from either test module so both use one; compiled only for tests.

use std::path::{Path, PathBuf};

/// A unique dir under the system temp dir, removed with its content on drop (tests run in
/// parallel, so each gets its own).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// `pivotd-{tag}-{pid}-{random}` under the system temp dir.
    pub(crate) fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "pivotd-{tag}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The path of `name` inside the dir.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The content of `name` inside the dir, empty when it cannot be read.
    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
